"""The HTTP service (FastAPI): JSON routes over trained runs, the browser page, Prometheus metrics.

`create_app(run_dirs, settings)` loads every run once (in the background: /readyz turns 200 when
all are loaded) and gives each model a `Batcher`. docs/serving.md is the reference for the routes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from genlab import kinds
from genlab.kinds.base import Route
from genlab.serve import workers
from genlab.serve.batching import Batcher
from genlab.serve.guards import BodyLimit, Failures, HostCheck, TokenAuth
from genlab.serve.metrics import Metrics, MetricsMiddleware
from genlab.serve.schemas import Settings, printable
from genlab.serve.served import Served

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("genlab.serve")


def model_names(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name (printable); a repeated name gets -2, -3, ..."""
    names: list[str] = []
    for d in run_dirs:
        base = name = printable(d.resolve().name)
        k = 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


class State:
    def __init__(self, run_dirs: list[Path], settings: Settings, device: str | None):
        self.run_dirs, self.settings, self.device = run_dirs, settings, device
        self.names = model_names(run_dirs)
        self.models: dict[str, Served] = {}
        self.batchers: dict[str, Batcher] = {}
        self.errors: dict[str, str] = {}
        self.metrics = Metrics()

    @property
    def timeout_message(self) -> str:
        return f"the request took longer than the server's timeout of {self.settings.timeout:g} s"

    @property
    def ready(self) -> bool:
        return len(self.models) == len(self.names) and not self.errors

    async def load_all(self) -> None:
        s = self.settings
        for name, run_dir in zip(self.names, self.run_dirs):
            try:
                served = await asyncio.to_thread(workers.load_served, run_dir, name, s, self.device)
            except Exception as e:  # noqa: BLE001 - reported by /readyz, the server stays up
                self.errors[name] = f"{type(e).__name__}: {e}"
                log.error("could not load %s: %s", run_dir, self.errors[name])
                continue
            batcher = Batcher(name, workers.runner(served), max_rows=s.max_batch, max_wait=s.max_wait_ms / 1000,
                              observe=self.metrics.observe_batch)
            batcher.start()
            self.metrics.watch_queue(name, lambda b=batcher: b.depth)
            self.batchers[name], self.models[name] = batcher, served
            self.metrics.loaded.set(len(self.models))

    def get(self, name: str, route: str) -> Served:
        if name not in self.names:
            raise HTTPException(404, f"no model named {name!r}; this server has: {', '.join(self.names)}")
        if name not in self.models:
            raise HTTPException(503, f"model {name!r} is not loaded" + (f": {self.errors[name]}"
                                                                         if name in self.errors else " yet"))
        served = self.models[name]
        if route not in served.routes:
            raise HTTPException(404, f"{name} is a {served.family} model: it answers "
                                     f"{', '.join(served.routes)}, not {route}")
        return served

    async def run(self, name: str, kind: str, key: Any, rows: int, payload: Any) -> dict:
        job = self.batchers[name].submit(kind, key, rows, payload)
        try:
            return await asyncio.wait_for(job.future, self.settings.timeout)
        except asyncio.TimeoutError:
            raise HTTPException(504, self.timeout_message) from None
        except Exception as e:  # noqa: BLE001 - the model failed on this batch: a 500, the server goes on
            log.error("%s %s failed:\n%s", name, kind, traceback.format_exc())
            raise HTTPException(500, printable(f"internal error: {type(e).__name__}: {e}")) from None


def _handler(state: State, route: Route):
    """The FastAPI endpoint of one kind's route: the model looked up by name, then the kind's handler."""
    async def endpoint(name: str, req, request: Request):
        return await route.handle(state, state.get(name, route.name), req, request)

    # FastAPI reads the body's schema from the signature: this route's request model
    endpoint.__signature__ = inspect.signature(endpoint).replace(parameters=[
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
        inspect.Parameter("req", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=route.request),
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)])
    return endpoint


def create_app(run_dirs: list[str | Path], settings: Settings | None = None, *, device: str | None = None):
    settings = settings or Settings()
    state = State([Path(d) for d in run_dirs], settings, device)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(state.load_all())
        yield
        loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)
        for b in state.batchers.values():
            await b.stop()

    app = FastAPI(title="genlab", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.genlab = state

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        """422 with {loc, msg, type} per error; never the input back (NaN, a lone surrogate or deep
        nesting in it would make the error itself fail)."""
        detail = [{"loc": [printable(p) if isinstance(p, str) else p for p in e["loc"]],
                   "msg": printable(e["msg"]), "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        loading = [n for n in state.names if n not in state.models and n not in state.errors]
        body = {"ready": state.ready, "models": list(state.models), "loading": loading, "errors": state.errors}
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/v1/models")
    async def list_models():
        return {"models": [state.models[n].info() for n in state.names if n in state.models]}

    for route in kinds.routes().values():
        app.post(f"/v1/models/{{name}}/{route.name}", name=route.name, summary=route.summary)(_handler(state, route))

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    app.add_middleware(BodyLimit, limit=settings.max_body)      # innermost
    app.add_middleware(TokenAuth, token=settings.token)
    app.add_middleware(HostCheck, host=settings.host, allow=settings.allow_hosts)
    app.add_middleware(Failures)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, router_app=app)  # outermost: counts 401/413 too
    return app
