"""load_images: the one entry point for image data, dispatching a name to a built-in or a reader of a path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from genlab.config import DataConfig
from genlab.data.builtin import BUILTINS, load_builtin
from genlab.data.images import ImageDataset, check_memory, resize_square, split
from genlab.data.readers import PATH_KINDS, read_path
from genlab.errors import DataError


def load_images(cfg: DataConfig) -> ImageDataset:
    """Load the dataset `cfg.name` names: a built-in (see `BUILTINS`) or a path.

    Paths may be a folder of PNG/JPEG images (class sub-folders give labels), an MNIST IDX folder or
    images file (raw or .gz), or a `.npz` file with an `images` array. Images come back in [-1, 1],
    resized to `cfg.image_size` when it is > 0. Flips are left to the trainer's batch loader.
    """
    if cfg.image_size < 0:
        raise DataError(f"data.image_size={cfg.image_size}; expected 0 (native size) or a positive size")
    if not cfg.memory_budget_gb > 0:
        raise DataError(f"data.memory_budget_gb={cfg.memory_budget_gb}; expected a positive number of GB")
    path = Path(cfg.name).expanduser()
    try:
        if cfg.name in BUILTINS:
            ds = load_builtin(cfg)
        elif cfg.name and path.exists():
            ds = read_path(path, cfg.image_size, cfg.memory_budget_gb)
        else:
            raise DataError(f"unknown dataset {cfg.name!r}: not a built-in name and no such path. Expected a "
                            f"built-in ({', '.join(BUILTINS)}) or a path to {PATH_KINDS}")
        if cfg.image_size and tuple(ds.images.shape[-2:]) != (cfg.image_size, cfg.image_size):
            check_memory(4 * len(ds) * ds.channels * cfg.image_size**2, cfg.memory_budget_gb, ds.source or ds.name,
                         f"resizing {len(ds)} images to data.image_size={cfg.image_size}")
            ds = ImageDataset(resize_square(ds.images, cfg.image_size), ds.labels, ds.classes, ds.name, ds.source)
    except MemoryError as e:  # the headers fit the budget, but the machine had less memory free
        raise DataError(f"{cfg.name}: ran out of memory loading this data; expected data that fits in free memory: "
                        "use less or smaller data, or lower data.memory_budget_gb to refuse it up front") from e
    if cfg.conditional and ds.labels is None:
        raise DataError(f"{ds.source or ds.name}: data.conditional=true but this data has no labels; use class "
                        "sub-folders (one per class), an IDX labels file or a `labels` array, or train unconditionally")
    return select_classes(ds, cfg.classes) if cfg.classes else ds


def split_images(cfg: DataConfig) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(dataset, train, held-out) of `cfg`'s images, loaded once: the whole dataset is split first and
    data.classes kept on each part after, so runs on different classes of one dataset hold out the same images
    (a base trained on 0-7 never trained on an image its adapted run evaluates on). The dataset is what
    `load_images(cfg)` gives (the judges' key)."""
    every = load_images(dataclasses.replace(cfg, classes=[]))
    train, val = split(every, cfg.val_fraction, cfg.seed)
    if not cfg.classes:
        return every, train, val
    return tuple(select_classes(d, cfg.classes) for d in (every, train, val))


def select_classes(ds: ImageDataset, names: list[str]) -> ImageDataset:
    """The images of the classes `names` (in that order: label i is names[i])."""
    unknown = [n for n in names if n not in ds.classes]
    if ds.labels is None or unknown or len(set(names)) != len(names):
        raise DataError(f"data.classes={','.join(names)}: {ds.name} has "
                        + (f"the classes {', '.join(ds.classes)}" if ds.labels is not None else "no labels")
                        + "; expected distinct names among them")
    old = torch.tensor([ds.classes.index(n) for n in names])
    keep = torch.isin(ds.labels, old)
    relabel = torch.full((len(ds.classes),), -1, dtype=torch.long)
    relabel[old] = torch.arange(len(names))
    return ImageDataset(ds.images[keep], relabel[ds.labels[keep]], list(names), ds.name, ds.source)


def few_per_class(ds: ImageDataset, per_class: int, seed: int) -> ImageDataset:
    """At most `per_class` images of each class, drawn with `seed` (the same on every machine)."""
    if per_class < 0 or ds.labels is None:
        raise DataError(f"data.per_class={per_class}: expected a positive count of images per class of "
                        "labelled data (0 = all)")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    taken: dict[int, int] = {}
    index = []
    for i in order.tolist():
        y = int(ds.labels[i])
        if taken.get(y, 0) < per_class:
            taken[y] = taken.get(y, 0) + 1
            index.append(i)
    return ds.subset(torch.tensor(sorted(index)))
