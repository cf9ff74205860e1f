"""load_images: the one entry point for image data, dispatching a name to a built-in or a reader of a path."""

from __future__ import annotations

from pathlib import Path

from genlab.config import DataConfig
from genlab.data.builtin import BUILTINS, load_builtin
from genlab.data.images import ImageDataset, check_memory, resize_square
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
    return ds
