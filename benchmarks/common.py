"""Helpers shared by the benchmark scripts: a quiet timed training run, rates, alternating timing and a Markdown
table."""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import genlab  # noqa: E402

QUIET = ["train.val_every=1000000", "train.sample_every=1000000", "train.ckpt_every=1000000", "train.log_every=10"]


def peer(module: str):
    """A peer library the side-by-side benchmarks compare with (diffusers), imported; a one-line exit saying how to
    install it when it is missing: it is a benchmark-only install, never a genlab dependency."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(f"this comparison needs {module}, which genlab does not depend on: pip install {module} "
                         "(benchmarks/RESULTS.md names the version behind each figure)") from None


def timed_train(family: str, data: str, *, preset: str, precision: str = "fp32", steps: int | None = None,
                minutes: float | None = None, out: str | Path | None = None, overrides=(), **kw):
    """Train quietly and return (run, training items/s measured by the trainer)."""
    out = out or Path(tempfile.mkdtemp(prefix="genlab-bench-")) / "run"
    run = genlab.train(family, data=data, out=out, preset=preset, precision=precision, steps=steps, minutes=minutes,
                       overrides=[*QUIET, *overrides], progress=False, log=lambda s: None, **kw)
    return run, run.result.items_per_s


@torch.no_grad()
def sampling_rate(model, n: int, repeats: int = 2, inputs: torch.Tensor | None = None, **controls) -> float:
    """Images per second for `model.sample(n)` (best of `repeats`); `inputs`: the images an image-to-image model
    translates (else every class in turn for a conditional model)."""
    k = getattr(model.config, "num_classes", 0)
    cond = inputs[:n] if inputs is not None else torch.arange(n) % k if k else None
    best = float("inf")
    for r in range(repeats):
        t = time.perf_counter()
        model.sample(n, cond=cond, generator=torch.Generator().manual_seed(r), **controls)
        best = min(best, time.perf_counter() - t)
    return n / best


def alternate(impl: dict, rounds: int, block: int = 5) -> dict[str, list[float]]:
    """Seconds per block of `block` steps of each implementation (`impl`: name -> steps(k)), the implementations
    taking turns for `rounds` rounds, so that all of them see this shared machine alike."""
    spent = {name: [] for name in impl}
    for _ in range(rounds):
        for name, steps in impl.items():
            t = time.perf_counter()
            steps(block)
            spent[name].append(time.perf_counter() - t)
    return spent


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return "" if v is None else str(v)


def markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows])
