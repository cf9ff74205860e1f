"""Image datasets in memory: tensors in [-1, 1] (N, C, H, W), optional integer labels, a description.

The bottom of genlab.data: the dataset type, its split and the preprocessing every source shares.
Loading by name lives in genlab.data.sources, above the readers and built-ins that use this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from genlab.errors import DataError


@dataclass
class ImageDataset:
    images: torch.Tensor                 # float32, (N, C, H, W), values in [-1, 1]
    labels: torch.Tensor | None = None   # int64, (N,); None when the source has no labels
    classes: list[str] = field(default_factory=list)  # label names, index = label id
    name: str = ""                       # "digits", a folder path, ...
    source: str = ""                     # where the data came from, for reports and model cards

    def __post_init__(self):
        if self.images.ndim != 4:
            raise DataError(f"{self.name}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise DataError(f"{self.name}: {len(self.labels)} labels for {len(self.images)} images; expected one each")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.labels is not None else 0

    def subset(self, index: torch.Tensor) -> "ImageDataset":
        labels = self.labels[index] if self.labels is not None else None
        return ImageDataset(self.images[index], labels, list(self.classes), self.name, self.source)

    def fingerprint(self) -> str:
        """A short hash of the pixels and labels, used to key cached judges."""
        h = hashlib.sha256(self.images.contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "count": len(self), "channels": self.channels,
                "image_size": self.image_size, "classes": list(self.classes)}


Splittable = TypeVar("Splittable")  # any dataset with `subset`, `__len__` and `name` (images, audio clips)


def split(ds: Splittable, val_fraction: float, seed: int) -> tuple[Splittable, Splittable]:
    """Deterministic train/validation split: the same seed gives the same split on every machine."""
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction}; expected a fraction between 0 and 1")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(len(ds) * val_fraction)))
    if n_val >= len(ds):
        raise DataError(f"{ds.name}: {len(ds)} items are too few to hold out {val_fraction:.0%} for validation")
    return ds.subset(perm[n_val:].sort().values), ds.subset(perm[:n_val].sort().values)


def check_memory(nbytes: int, budget_gb: float, where: str, what: str) -> None:
    """Refuse data whose declared size (read from headers, before allocating) exceeds `budget_gb`."""
    if nbytes > budget_gb * 2**30:
        raise DataError(f"{where}: {what} needs about {nbytes / 2**30:.3g} GB of memory, more than "
                        f"data.memory_budget_gb={budget_gb:g}; expected smaller data, or raise "
                        "data.memory_budget_gb if this machine has the memory")


# ---------------------------------------------------------------------------------------------
# Preprocessing shared by every source: values to [-1, 1], pad to square, resize.

def to_float_images(array: np.ndarray, where: str) -> torch.Tensor:
    """(N, C, H, W) uint8 0..255, or float in [0, 1] or [-1, 1] -> float32 tensor in [-1, 1].

    Floats whose values all lie in [0, 1] are read as [0, 1] data; `where` names the source in errors.
    """
    if array.dtype.kind in "iu":
        if array.dtype != np.uint8 and array.size and (array.min() < 0 or array.max() > 255):
            raise DataError(f"{where}: integer pixel values span [{array.min()}, {array.max()}]; expected 0..255")
        return torch.from_numpy(array.astype(np.float32)).div_(127.5).sub_(1.0)
    if array.dtype.kind != "f":
        raise DataError(f"{where}: pixel dtype {array.dtype}; expected uint8 0..255 or float in [0, 1] or [-1, 1]")
    x = torch.from_numpy(array.astype(np.float32))
    if not torch.isfinite(x).all():
        raise DataError(f"{where}: pixel values contain NaN or infinity; expected finite values")
    lo, hi = (x.min().item(), x.max().item()) if x.numel() else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        return x.mul_(2.0).sub_(1.0)
    if lo >= -1.0 and hi <= 1.0:
        return x
    raise DataError(f"{where}: float pixel values span [{lo:.4g}, {hi:.4g}]; expected [0, 1] or [-1, 1] "
                    "(or uint8 0..255)")


def pad_to_square(images: torch.Tensor) -> torch.Tensor:
    """Centre (N, C, H, W) images on a square canvas filled with -1, the background of [-1, 1] data."""
    h, w = images.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return F.pad(images, (left, side - w - left, top, side - h - top), value=-1.0)


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (N, C, H, W) images to square, then resize to (N, C, size, size).

    Bilinear with antialiasing, so downscaling averages pixels instead of skipping them (aliasing).
    """
    images = pad_to_square(images)
    if images.shape[-1] == size:
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp_(-1.0, 1.0)  # the weights are convex, but float rounding can step just past +-1

