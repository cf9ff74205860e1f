"""The image kind's data for a family: load and split the images, size the model config from them
(channels, image size, classes), and the training preview (a sample grid, with an optional watch on it)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from genlab.config import ConfigError, RunConfig
from genlab.data import ImageDataset
from genlab.data.sources import few_per_class, split_images
from genlab.data.loader import BatchLoader, eval_batches
from genlab.imageio import save_grid
from genlab.models.base import eval_mode
from genlab.prepare import Prepared, needs_labels
from genlab.provenance import image_metadata


def prepare_images(cfg: RunConfig, run_dir: Path | None = None, *, resume: bool = False,
                   watch_for: Callable | None = None) -> Prepared:
    """Load and split the images, size the model config from them, and set up the training preview
    (with the watch that `watch_for(data config, dataset)` gives for this data, if any: a watch on each
    preview's samples, watch(images) -> (scalars to log, warning or None)). A resume reloads the same images."""
    ds, train, val = split_images(cfg.data)  # split before data.classes is kept; ds is the judge's key
    if needs_labels(cfg) and ds.labels is None:
        raise ConfigError(f"{cfg.family} {'with --conditional ' if cfg.data.conditional else ''}needs labelled data, "
                          f"but {ds.name} has no labels (use a folder with one sub-folder per class)")
    if cfg.data.per_class:  # few-shot: the held-out split stays whole, for evaluation
        d = cfg.data
        train = few_per_class(train, d.per_class, d.seed if d.per_class_seed < 0 else d.per_class_seed)
    m = cfg.model
    for name, value in (("in_channels", ds.channels), ("image_size", ds.image_size)):
        if hasattr(m, name):
            setattr(m, name, value)
    if hasattr(m, "num_classes"):
        m.num_classes = ds.num_classes if needs_labels(cfg) else 0
    if not needs_labels(cfg):  # an unconditional generator never sees the labels
        train, val = (ImageDataset(d.images, None, [], d.name, d.source) for d in (train, val))
    tc = cfg.train
    make = partial(BatchLoader, train, tc.batch_size, tc.seed, flip=cfg.data.flip)
    watch = watch_for(cfg.data, ds) if watch_for is not None else None
    return Prepared(make, lambda device: eval_batches(val, 256, device, limit=1024), image_preview(watch),
                    train.describe() | {"count": len(train) + len(val)})


def image_preview(watch: Callable | None = None):
    """A 64-sample grid per call, and the scalars and warning of `watch(samples)` when there is one."""

    def preview(model: nn.Module, step: int, run_dir: Path):
        if not model.generative:
            return {}, None
        k = getattr(model.config, "num_classes", 0)
        with eval_mode(model):
            images = model.sample(64, cond=torch.arange(64) % k if k else None,
                                  generator=torch.Generator().manual_seed(0))
        settings = {"n": 64, "label": f"i % {k} (every class in turn)" if k else None}
        meta = image_metadata(run_dir, seed=0, settings=settings, kind="training preview", preview_step=step)
        save_grid(images.cpu(), run_dir / "samples" / f"step-{step:07d}.png", nrow=k if k else None, metadata=meta)
        return watch(images) if watch is not None else ({}, None)

    return preview
