"""What a kind hands the trainer (genlab.kinds: each kind's `prepare` builds it): a loader factory, validation
batches, a preview hook, and a description of the data. data/ knows nothing about models; the kinds' prepare
modules (genlab.kinds.*.prepare) know both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from genlab import registry
from genlab.config import RunConfig
from genlab.models.base import eval_mode
from genlab.provenance import image_metadata
from genlab.runs import atomic_write


@dataclass
class Prepared:
    make_loader: Callable[..., Any]        # (rank=, world=, device=) -> object with .batch(i)
    val_batches: Callable[[torch.device], Any]  # device -> iterable of validation batches
    preview: Callable | None               # (model, step, run_dir) -> (scalars, warning)
    describe: dict                         # the dataset, for config.json and model cards
    tokenizer: Any = None                  # text runs: saved as tokenizer.json in the run


def needs_labels(cfg: RunConfig) -> bool:
    """Whether the family trains on labels: conditional generators and the classifiers."""
    return cfg.data.conditional or not registry.get(cfg.family).model_cls.generative


def preview_samples(model, step: int, run_dir: Path, comment: str, **controls):
    """What a clip kind's training preview shows (audio, video): one sample per class (or 8) with seed 0, their
    provenance, and the path samples/step-N without a suffix (its folder made). None for a model that does not
    generate."""
    if not model.generative:
        return None
    k = getattr(model.config, "num_classes", 0)
    n = k or 8
    with eval_mode(model):
        items = model.sample(n, cond=torch.arange(n) if k else None, generator=torch.Generator().manual_seed(0),
                             **controls)
    settings = {"n": n, "label": "0..K-1 (one per class, in order)" if k else None}
    meta = image_metadata(run_dir, seed=0, settings=settings, kind="training preview", preview_step=step,
                          comment=comment)
    out = run_dir / "samples" / f"step-{step:07d}"
    out.parent.mkdir(parents=True, exist_ok=True)
    return items.cpu(), meta, out


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
