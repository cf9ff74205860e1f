"""The image-pairs kind's data for a family: load and split the pairs, size the model config from them (input and
output channels, image size), and the training preview (held-out inputs, their translations and targets)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from genlab.config import RunConfig
from genlab.data.image_pairs import PairDataset, PairLoader, pair_batches, split_pairs
from genlab.imageio import save_grid
from genlab.models.base import eval_mode
from genlab.prepare import Prepared
from genlab.provenance import image_metadata

PREVIEW = 8   # held-out pairs in a preview grid


def prepare_pairs(cfg: RunConfig, run_dir: Path | None = None, *, resume: bool = False) -> Prepared:
    ds, train, val = split_pairs(cfg.data)
    m = cfg.model
    for name, value in (("in_channels", ds.a.shape[1]), ("out_channels", ds.b.shape[1]),
                        ("image_size", ds.image_size)):
        if hasattr(m, name):
            setattr(m, name, value)
    tc = cfg.train
    make = partial(PairLoader, train, tc.batch_size, tc.seed, flip=cfg.data.flip)
    return Prepared(make, lambda device: pair_batches(val, 256, device, limit=1024), pair_preview(val),
                    train.describe() | {"count": len(train) + len(val)})


def triptychs(a: torch.Tensor, out: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of input | output (| target), as (rows * k, 3, H, W) images for a grid of k columns (grey as RGB)."""
    parts = [x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x for x in (a, out, b) if x is not None]
    return torch.stack(parts, 1).flatten(0, 1)


def pair_preview(val: PairDataset):
    """A grid per call: PREVIEW held-out inputs, the run's translations (seed 0) and the targets, a row each."""
    held = val.subset(torch.arange(min(PREVIEW, len(val))))

    def preview(model: nn.Module, step: int, run_dir: Path):
        dev = next(model.parameters()).device
        with eval_mode(model):
            out = model.sample(len(held), cond=held.a.to(dev), generator=torch.Generator().manual_seed(0)).cpu()
        meta = image_metadata(run_dir, seed=0, settings={"n": len(held), "input": "held-out pairs 0..7"},
                              kind="training preview", preview_step=step)
        save_grid(triptychs(held.a, out, held.b), run_dir / "samples" / f"step-{step:07d}.png", nrow=3,
                  metadata=meta)
        return {}, None

    return preview
