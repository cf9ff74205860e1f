"""Loading a run for the server (`Served`, with its kind's routes, controls and provenance precomputed) and the
function the model's batcher runs on its worker thread. What each route computes lives with its kind
(genlab.kinds.*.serve)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from genlab import kinds
from genlab.errors import UsageError
from genlab.loading import load
from genlab.models.controls import Control
from genlab.runs import read_json
from genlab.serve.batching import Job
from genlab.serve.schemas import Settings, printable
from genlab.serve.served import Served

SERVER_LIMITS = {"steps": "max_steps", "max_new_tokens": "max_new_tokens"}  # control -> the Settings field capping it


def load_served(run_dir: Path, name: str, settings: Settings, device: str | None = None) -> Served:
    model = load(run_dir, device=device)
    family = model.run.config.family
    kind = kinds.of_run(model.run.config)
    served = Served(name, model, family, kind, printable(str(model.run.config.data.name)), [], {}, {})
    if not served.routes:
        raise UsageError(f"{run_dir}: a {family} run has nothing to serve (the {kind.name} kind's routes "
                         f"{', '.join(r.name for r in kind.routes) or '(none)'} need a generator); serve a generator run")
    ev_path = run_dir / "eval.json"
    rows = read_json(ev_path).get("rows", []) if ev_path.exists() else []
    # a run folder is untrusted: names that cannot be written as UTF-8 (lone surrogates) or metrics that
    # are not JSON numbers (NaN) would make every GET /v1/models fail, so make them safe once here
    model.run = replace(model.run, classes=tuple(printable(str(c)) for c in model.run.classes))
    served.classes = list(model.run.classes)
    served.metrics = {printable(str(r["metric"])): _safe_value(r["value"]) for r in rows}
    served.controls = controls_of(served, settings)
    served.provenance = kind.provenance(model)
    return served


def _safe_value(value: Any) -> Any:
    """An eval.json value as JSON can carry it: NaN and +-Infinity as null, strings printable."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return printable(value) if isinstance(value, str) else value


def controls_of(s: Served, settings: Settings) -> dict[str, Control]:
    """The model's declared controls within this server's limits: what GET /v1/models reports and
    what requests are checked against."""
    out = {name: c.bounded(getattr(settings, SERVER_LIMITS[name])) if name in SERVER_LIMITS else c
           for name, c in s.model.controls().items()}
    return s.kind.server_controls(out, settings)


def runner(s: Served) -> Callable[[str, list[Job]], list[Any]]:
    """What the batcher calls with a batch of one route's jobs."""
    routes = {r.name: r for r in s.kind.routes}
    return lambda route, jobs: routes[route].run(s, jobs)
