"""The HTTP service (FastAPI): JSON routes over trained runs, the browser page, Prometheus metrics.

`create_app(run_dirs, settings)` loads every run once (in the background: /readyz turns 200 when
all are loaded) and gives each model a `Batcher`. docs/serving.md is the reference for the routes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import traceback
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from genlab.provenance import for_request
from genlab.serve import workers
from genlab.serve.batching import Batcher
from genlab.serve.guards import BodyLimit, Failures, HostCheck, TokenAuth
from genlab.serve.metrics import Metrics, MetricsMiddleware
from genlab.serve.schemas import (ClassifyRequest, ImagesRequest, InterpolateRequest, Settings, TextRequest,
                                  TranslateRequest, printable)
from genlab.serve.workers import ImageJob, Served, TextJob, WalkJob, invalid
from genlab.textgen import encode_prompt

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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _wants_png(request: Request) -> bool:
    """`Accept: image/png`: one PNG grid instead of JSON."""
    return "image/png" in request.headers.get("accept", "")


def _image_response(request: Request, served: Served, out: dict, extra: dict) -> Response:
    if _wants_png(request):
        return Response(out["png"], media_type="image/png",
                        headers={"X-Genlab-Seed": out["provenance"]["genlab:seed"], "X-AI-Generated": "true"})
    size = served.model.config.image_size
    return JSONResponse({"model": served.name, **extra, "settings": out["settings"], "width": size,
                         "height": size, "images": [_b64(p) for p in out["pngs"]], "provenance": out["provenance"]})


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

    @app.post("/v1/models/{name}/images")
    async def images(name: str, req: ImagesRequest, request: Request):
        served = state.get(name, "images")
        if req.n > settings.max_n:
            raise invalid("n", f"n={req.n} is over this server's limit of {settings.max_n} images per request")
        workers.check_label(served, req.label)
        controls = workers.image_controls(served, req)
        grid = _wants_png(request)
        key = (req.label is None, tuple(sorted(controls.items()))) if served.family == "ddpm" else ()
        out = await state.run(name, "images", key, req.n, ImageJob(req.n, req.label, req.seed, controls, grid))
        return _image_response(request, served, out, {"n": req.n, "seed": req.seed, "label": req.label})

    @app.post("/v1/models/{name}/interpolate")
    async def interpolate(name: str, req: InterpolateRequest, request: Request):
        served = state.get(name, "interpolate")
        if req.frames > settings.max_n:
            raise invalid("frames", f"frames={req.frames} is over this server's limit of {settings.max_n}")
        workers.check_label(served, req.label)
        grid = _wants_png(request)
        out = await state.run(name, "interpolate", (), req.frames, WalkJob(req.seeds, req.frames, req.label, grid))
        return _image_response(request, served, out, {"seeds": list(req.seeds), "frames": req.frames,
                                                      "label": req.label})

    @app.post("/v1/models/{name}/text")
    async def text(name: str, req: TextRequest):
        served = state.get(name, "text")
        if req.max_new_tokens > settings.max_new_tokens:
            raise invalid("max_new_tokens", f"max_new_tokens={req.max_new_tokens} is over this server's limit "
                                            f"of {settings.max_new_tokens}")
        workers.check_range(served, {"top_k": req.top_k, "top_p": req.top_p, "temperature": req.temperature})
        try:
            ids = encode_prompt(served.model, req.prompt)
        except ValueError as e:
            raise invalid("prompt", str(e)) from None
        knobs = {"temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p}
        settings_doc = {**knobs, "max_new_tokens": req.max_new_tokens, "stop": req.stop}
        meta = for_request(served.provenance, seed=req.seed, settings=settings_doc)
        head = {"model": served.name, "prompt": req.prompt, "seed": req.seed, "settings": settings_doc}

        def done(result: dict) -> dict:
            return {**head, **result, "text": req.prompt + result["completion"], "provenance": meta}

        job = TextJob(req.prompt, ids, knobs, req.max_new_tokens, req.seed, req.stop)
        if not req.stream:
            return done(await state.run(name, "text", (), 1, job))
        return StreamingResponse(_events(state, name, job, done), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/models/{name}/translate")
    async def translate_route(name: str, req: TranslateRequest):
        served = state.get(name, "translate")
        workers.check_range(served, {"beam": req.beam, "length_penalty": req.length_penalty,
                                     "max_new_tokens": req.max_new_tokens})
        try:
            served.model.run.tokenizer.encode(req.text, strict=True)
        except ValueError as e:
            raise invalid("text", str(e)) from None
        key = (req.beam, req.length_penalty, req.max_new_tokens)
        out = await state.run(name, "translate", key, req.beam, req)
        return {"model": served.name, "text": req.text, **out,
                "settings": {"beam": req.beam, "length_penalty": req.length_penalty,
                             "max_new_tokens": req.max_new_tokens}, "provenance": served.provenance}

    @app.post("/v1/models/{name}/classify")
    async def classify_route(name: str, req: ClassifyRequest):
        state.get(name, "classify")
        return {"model": name, "text": req.text, **await state.run(name, "classify", (), 1, req)}

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


def _sse(data: dict, event: str | None = None) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"


async def _events(state: State, name: str, job: TextJob, done):
    """Server-sent events for one streamed generation: a `data: {"text": piece}` per token as the
    batch produces it, then `event: done` with the whole response (or `event: error`)."""
    loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
    job.sink = lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)
    queued = state.batchers[name].submit("text", (), 1, job)
    deadline, getter = loop.time() + state.settings.timeout, None
    try:
        while True:
            getter = asyncio.ensure_future(pieces.get())
            await asyncio.wait({getter, queued.future}, timeout=max(0.0, deadline - loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield _sse({"text": getter.result()})
                continue
            getter.cancel()
            if queued.future.done() and pieces.empty():
                if queued.future.exception() is not None:
                    e = queued.future.exception()
                    log.error("%s text stream failed: %s: %s", name, type(e).__name__, e)
                    yield _sse({"detail": f"internal error: {type(e).__name__}: {e}"}, "error")
                else:
                    yield _sse(done(queued.future.result()), "done")
                return
            if loop.time() >= deadline:
                yield _sse({"detail": state.timeout_message}, "error")
                return
    finally:
        if getter is not None:
            getter.cancel()
        if not queued.future.done():
            queued.future.cancel()  # the client left or timed out: its row stops at the next token
