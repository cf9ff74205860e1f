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


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
