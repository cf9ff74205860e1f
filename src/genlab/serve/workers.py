"""What the server does with each family: its info and controls, request checks, and the batched
computations that the batcher runs on the model's worker thread.

Batching never changes a request's samples: every job draws its own randomness from
torch.Generator().manual_seed(seed), exactly as `genlab.sample` / `textgen.generate` with n=1 would,
and only the deterministic network passes are shared (images: `draw` per job then one `decode`, or
one diffusion loop fed by `NoiseParts`; text: `LanguageModel.stream_rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from fastapi.exceptions import RequestValidationError

from genlab import registry
from genlab.data.tokenizers import EOS
from genlab.errors import ControlError, UsageError
from genlab.imageio import grid_image, png_bytes, to_uint8
from genlab.loading import load
from genlab.models.base import NoiseParts, slerp
from genlab.models.controls import Control, check
from genlab.provenance import for_request, image_metadata
from genlab.runs import read_json
from genlab.serve.batching import Job
from genlab.serve.schemas import IMAGE_CONTROLS, TEXT_MAX_NEW_TOKENS, Settings, printable
from genlab.textgen import classify, cut_at_stop, translate

ROUTES = {"image": ["images"], "lm": ["text"], "pairs": ["translate"], "labels": ["classify"]}
LATENT_FAMILIES = ("ae", "vae", "gan")
SERVER_LIMITS = {"steps": "max_steps", "max_new_tokens": "max_new_tokens"}  # control -> the Settings field capping it


def invalid(field_name: str, msg: str) -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming the body field."""
    return RequestValidationError([{"loc": ("body", field_name), "msg": msg, "type": "value_error"}])


@dataclass
class Served:
    """A loaded run, with everything the routes need precomputed (requests never read the run folder)."""
    name: str
    model: torch.nn.Module
    family: str
    kind: str
    dataset: str
    classes: list[str]
    controls: dict[str, Control]
    metrics: dict[str, float | None]
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def routes(self) -> list[str]:
        return ROUTES[self.kind] + (["interpolate"] if self.family in LATENT_FAMILIES else [])

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model.config, "num_classes", 0) or 0)

    @property
    def label_required(self) -> bool:  # a conditional ae/vae has no unconditional mode
        return bool(self.num_classes) and self.family in ("ae", "vae")

    def info(self) -> dict:
        c = self.model.config
        cond = {"image": "labels" if self.num_classes else "none", "lm": "prompt", "pairs": "source text",
                "labels": "text"}[self.kind]
        out = {"name": self.name, "family": self.family, "kind": self.kind, "dataset": self.dataset,
               "conditioning": cond, "classes": self.classes, "label_required": self.label_required,
               "latent": self.family in LATENT_FAMILIES,
               "routes": self.routes, "controls": {k: c.describe() for k, c in self.controls.items()},
               "metrics": self.metrics}
        if self.kind == "image":
            out["image"] = {"channels": c.in_channels if hasattr(c, "in_channels") else c.channels,
                            "size": c.image_size}
        return out


def load_served(run_dir: Path, name: str, settings: Settings, device: str | None = None) -> Served:
    model = load(run_dir, device=device)
    family = model.run.config.family
    kind = registry.get(family).kind
    if family == "classifier":
        raise UsageError(f"{run_dir}: classifier runs are judges, not generators; serve a generator run")
    ev_path = run_dir / "eval.json"
    rows = read_json(ev_path).get("rows", []) if ev_path.exists() else []
    # a run folder is untrusted: names that cannot be written as UTF-8 (lone surrogates) or metrics that
    # are not JSON numbers (NaN) would make every GET /v1/models fail, so make them safe once here
    model.run = replace(model.run, classes=tuple(printable(str(c)) for c in model.run.classes))
    metrics = {printable(str(r["metric"])): _safe_value(r["value"]) for r in rows}
    served = Served(name, model, family, kind, printable(str(model.run.config.data.name)), list(model.run.classes),
                    {}, metrics)
    served.controls = controls_of(served, settings)
    if kind == "image":
        served.provenance = image_metadata(model, seed=None, settings={})
    else:
        meta = image_metadata(model, seed=None, settings={})
        served.provenance = {**{k: v for k, v in meta.items() if k != "DigitalSourceType"},
                             "Comment": "AI-generated text made with genlab", "genlab:kind": "text"}
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
    if s.kind == "lm":  # the text route's own default (TextRequest), within the limit
        out["max_new_tokens"] = replace(out["max_new_tokens"],
                                        default=min(TEXT_MAX_NEW_TOKENS, settings.max_new_tokens))
    return out


# ---- checks before a job is queued (422 naming the field) ----------------------------------------


def check_range(s: Served, values: dict[str, Any]) -> None:
    """Each value within the range or choices of this model's control of its name (the names must be controls)."""
    try:
        check(s.controls, **values)
    except ControlError as e:
        raise invalid(e.field, f"{s.name}: {e}") from None


def check_label(s: Served, label: int | None) -> None:
    if label is not None and not s.num_classes:
        raise invalid("label", f"{s.name} was trained without labels; leave label out")
    if label is not None and label >= s.num_classes:
        raise invalid("label", f"label {label} is out of range; {s.name} knows 0..{s.num_classes - 1}")
    if label is None and s.label_required:
        raise invalid("label", f"{s.name} is a class-conditional {s.family}: give a label 0..{s.num_classes - 1}")


def image_controls(s: Served, req) -> dict[str, Any]:
    """The request's family controls checked against this model and resolved (defaults filled in, so
    equal settings share a batch and the provenance records what was used)."""
    given = {k: getattr(req, k) for k in IMAGE_CONTROLS if k in req.model_fields_set and getattr(req, k) is not None}
    for key in given:
        if key not in s.controls:
            valid = ", ".join(s.controls) or "none"
            raise invalid(key, f"{key} is not a control of {s.family} models (valid: {valid})")
    check_range(s, given)
    if s.family != "ddpm":
        return given
    try:
        plan = s.model.plan(**given, labelled=req.label is not None)
    except ControlError as e:
        raise invalid(e.field, str(e)) from None
    if plan["steps"] > s.controls["steps"].max:
        raise invalid("sampler" if plan["sampler"] == "ddpm" else "steps",
                      f"{plan['steps']} steps is over this server's limit of {s.controls['steps'].max}")
    return plan


# ---- batched computations (on the model's worker thread) -----------------------------------------


@dataclass
class ImageJob:
    n: int
    label: int | None
    seed: int
    controls: dict
    grid: bool          # one PNG grid instead of a PNG per image


@dataclass
class TextJob:
    prompt: str
    ids: list[int]
    knobs: dict                      # temperature, top_k, top_p
    max_new: int
    seed: int
    stop: list[str]
    sink: Callable[[str], None] | None = None   # called with each new piece of text (streaming)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pngs(s: Served, images: torch.Tensor, job: ImageJob, kind: str, seed) -> dict:
    settings = {"label": job.label, **job.controls}
    meta = for_request(s.provenance, seed=seed, settings=settings, kind=kind)
    if job.grid:
        return {"png": png_bytes(grid_image(images), meta), "provenance": meta, "settings": settings}
    return {"pngs": [png_bytes(a, meta) for a in to_uint8(images)], "provenance": meta, "settings": settings}


class Abandoned(RuntimeError):
    """Every request of a batch has gone (timed out or disconnected): stop working for nobody."""


def _stop_if_abandoned(jobs: list[Job]) -> None:
    if all(j.cancelled for j in jobs):
        raise Abandoned(f"all {len(jobs)} requests of this batch have gone")


def run_images(s: Served, jobs: list[Job]) -> list[dict]:
    m, ps = s.model, [j.payload for j in jobs]
    if s.family == "ddpm":  # one diffusion loop; each job's noise (start and per step) from its own seed
        labels = None if ps[0].label is None else torch.tensor([p.label for p in ps for _ in range(p.n)])
        x = m.sample(sum(p.n for p in ps), cond=labels, generator=NoiseParts([(p.n, _gen(p.seed)) for p in ps]),
                     on_step=lambda i: _stop_if_abandoned(jobs), **ps[0].controls)
    else:  # each job's latents (and labels) from its own seed, then one decoder pass
        drawn = [m.draw(p.n, cond=p.label, generator=_gen(p.seed), **p.controls) for p in ps]
        z = torch.cat([d[0] for d in drawn])
        y = None if drawn[0][1] is None else torch.cat([d[1] for d in drawn])
        x = m.decode(z, y)
    parts = x.cpu().split([p.n for p in ps])
    return [_pngs(s, part, p, "samples", p.seed) for part, p in zip(parts, ps)]


@dataclass
class WalkJob:
    seeds: tuple[int, int]
    frames: int
    label: int | None
    grid: bool = False

    @property
    def controls(self) -> dict:
        return {"frames": self.frames}


def run_interpolate(s: Served, jobs: list[Job]) -> list[dict]:
    """Spherical walks from seed a's latent to seed b's, the label held along the walk (0 when a
    conditional GAN gets none, as `genlab interpolate`). All jobs' frames decode in one pass."""
    m, zs, ys = s.model, [], []
    for job in jobs:
        p = job.payload
        label = p.label if p.label is not None or not s.num_classes else 0  # as `genlab interpolate`
        za, ya = m.draw(1, cond=label, generator=_gen(p.seeds[0]))
        zb, _ = m.draw(1, cond=label, generator=_gen(p.seeds[1]))
        zs.append(torch.cat([slerp(za, zb, t) for t in torch.linspace(0, 1, p.frames).tolist()]))
        ys.append(None if ya is None else ya.expand(p.frames))
    x = m.decode(torch.cat(zs), None if ys[0] is None else torch.cat(ys)).cpu()
    parts = x.split([j.payload.frames for j in jobs])
    return [_pngs(s, part, j.payload, "interpolation", list(j.payload.seeds)) for part, j in zip(parts, jobs)]


class _Completion:
    """One row's text as its tokens arrive: stop strings, finish reason, and the pieces to stream.
    While a stop string could still be forming, its possible start is held back."""

    def __init__(self, tokenizer, job: Job):
        self.tok, self.job, self.queued = tokenizer, job.payload, job
        self.ids: list[int] = []
        self.count, self.sent, self.text, self.reason = 0, 0, "", None
        self.hold = max((len(x) for x in self.job.stop), default=1) - 1

    def ended(self) -> bool:
        """Complete, or nobody waits for it any more (the client left or timed out)."""
        if self.reason is None and self.queued.cancelled:
            self.reason = "cancelled"
        return self.reason is not None

    def add(self, token: int) -> None:
        self.count += 1
        if token != EOS:
            self.ids.append(token)
        full = self.tok.decode(self.ids)
        self.text = cut_at_stop(full, self.job.stop)
        if len(self.text) < len(full):
            self.reason = "stop"
        elif token == EOS:
            self.reason = "eos"
        elif self.count >= self.job.max_new:
            self.reason = "length"
        ready = self.text if self.reason else self.text[:len(self.text) - self.hold].rstrip("\ufffd")
        if self.job.sink is not None and len(ready) > self.sent:
            self.job.sink(ready[self.sent:])
            self.sent = len(ready)

    def result(self) -> dict:
        return {"completion": self.text, "tokens": self.count, "finish_reason": self.reason or "length"}


def run_text(s: Served, jobs: list[Job]) -> list[dict]:
    ps = [j.payload for j in jobs]
    rows = [_Completion(s.model.run.tokenizer, j) for j in jobs]
    steps = s.model.stream_rows([p.ids for p in ps], [_gen(p.seed) for p in ps], [p.knobs for p in ps],
                                [p.max_new for p in ps], ended=lambda i: rows[i].ended())
    for new in steps:
        for row, token in zip(rows, new):
            if token is not None and row.reason is None:
                row.add(token)
    return [r.result() for r in rows]


def run_translate(s: Served, jobs: list[Job]) -> list[dict]:
    out = translate(s.model, [j.payload.text for j in jobs], beam=jobs[0].payload.beam,
                    length_penalty=jobs[0].payload.length_penalty, max_new_tokens=jobs[0].payload.max_new_tokens)
    return [{"translation": t} for t in out]


def run_classify(s: Served, jobs: list[Job]) -> list[dict]:
    return [{"label": c.label, "probs": c.probs, "tokens": c.tokens, "weights": c.weights}
            for c in classify(s.model, [j.payload.text for j in jobs])]


RUNNERS = {"images": run_images, "interpolate": run_interpolate, "text": run_text,
           "translate": run_translate, "classify": run_classify}


def runner(s: Served) -> Callable[[str, list[Job]], list[Any]]:
    return lambda kind, jobs: RUNNERS[kind](s, jobs)
