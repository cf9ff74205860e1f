"""What `import genlab` offers: train(), load(), sample(), evaluate(). The CLI is a thin layer over this."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from genlab import kinds
from genlab.kinds.image.imagegen import interpolate, reconstruct
from genlab.loading import as_model, load, load_config
from genlab.training.run import Run, build_config
from genlab.training.run import train as train_run


def train(family: str, data: str | None = None, *, out: str | Path | None = None, preset: str | None = None,
          overrides: Sequence[str] = (), resume: str | Path | None = None, progress: bool = True,
          log=print, **shortcuts: Any) -> Run:
    """Train a family on a dataset ("digits" when None) and return the run; see genlab.training.run.train.
    The family's kind prepares the data (image runs also watch for mode collapse with the dataset's judge
    when one is cached)."""
    return train_run(family, data, out=out, preset=preset, overrides=overrides, resume=resume, progress=progress,
                     log=log, prepare=kinds.prepare, **shortcuts)


def sample(run: str | Path | nn.Module, n: int, *, cond: Any = None, seed: int = 0, **controls: Any) -> torch.Tensor:
    """n samples from a run (path or loaded model) with a seed: the same seed gives the same samples."""
    model = as_model(run)
    return model.sample(n, cond=cond, generator=torch.Generator().manual_seed(seed), **controls)


def evaluate(run_dir: str | Path, **kwargs: Any) -> dict:
    """Evaluate a run and write its eval.json, as its kind does it: image runs in a judge's feature space
    (genlab.kinds.image.evaluate), text runs with text metrics (genlab.kinds.text.evaluate)."""
    return kinds.of_run(load_config(run_dir)).evaluate(Path(run_dir), **kwargs)


__all__ = ["Run", "train", "load", "load_config", "sample", "evaluate", "build_config", "reconstruct", "interpolate",
           "as_model"]
