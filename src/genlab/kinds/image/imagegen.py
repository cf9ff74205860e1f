"""Image runs beyond sampling: reconstructions of held-out images and latent walks (the families that declare
the "reconstruct" and "latent" capabilities)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from genlab.data.sources import split_images
from genlab.registry import families_with
from genlab.errors import UsageError
from genlab.loading import as_model
from genlab.models.base import slerp


@torch.no_grad()
def reconstruct(run: str | Path | nn.Module, n: int = 16) -> torch.Tensor:
    """Held-out images interleaved row by row with their reconstructions: (2n, C, H, W) in [-1, 1]."""
    model = as_model(run)
    if "reconstruct" not in model.CAPABILITIES:
        raise UsageError(f"{model.family} runs cannot reconstruct; only {' and '.join(families_with('reconstruct'))} "
                         "have an encoder")
    cfg = model.run.config
    _, _, val = split_images(cfg.data)
    dev = next(model.parameters()).device
    x = val.images[:n].to(dev)
    y = val.labels[:n].to(dev) if model.config.num_classes and val.labels is not None else None
    rec = model.reconstruct(x, y)
    row = min(8, n)  # alternate rows: originals, then their reconstructions
    parts = [t for i in range(0, len(x), row) for t in (x[i:i + row], rec[i:i + row])]
    return torch.cat(parts).cpu()


@torch.no_grad()
def interpolate(run: str | Path | nn.Module, seeds: Sequence[int] = (0, 1), *, frames: int = 10, rows: int = 8,
                label: int | None = None) -> torch.Tensor:
    """`rows` latent walks from seed[0]'s latents to seed[1]'s, `frames` each: (rows * frames, C, H, W)."""
    model = as_model(run)
    if "latent" not in model.CAPABILITIES:
        raise UsageError(f"{model.family} runs have no latent space to walk; use a run of "
                         f"{', '.join(families_with('latent'))}")
    if frames < 2:
        raise UsageError(f"--frames {frames}: a walk needs at least 2 frames")
    if rows < 1:
        raise UsageError(f"--rows {rows}: expected at least one walk")
    k = model.config.num_classes
    if label is not None and not k:
        raise UsageError(f"--label {label}: this {model.family} run was trained without labels; drop --label")
    cond = (label if label is not None else 0) if k else None
    # both ends from the model's own prior for that label (a VAE's may be one Gaussian per class)
    za, y = model.draw(rows, cond=cond, generator=torch.Generator().manual_seed(seeds[0]))
    zb, _ = model.draw(rows, cond=cond, generator=torch.Generator().manual_seed(seeds[1]))
    path = torch.stack([slerp(za, zb, t) for t in torch.linspace(0, 1, frames).tolist()], dim=1)  # (rows, frames, d)
    ys = y.repeat_interleave(frames) if y is not None else None
    return model.decode(path.flatten(0, 1), ys).cpu()
