"""Paired images for image-to-image translation (pix2pix): an input A and its target B, both (N, C, H, W) in [-1, 1]
and of one size, with optional labels (the built-ins keep their digit or shape class, for the judge).

Built-ins made from genlab's own data (no download), and readers for the layouts people have: a folder with A/
and B/ sub-folders whose files match by name, or a folder of images with A and B side by side (the layout of the
pix2pix datasets: A on the left).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from genlab.config import DataConfig
from genlab.data.builtin import digits, shapes
from genlab.data.images import check_memory, resize_square, split
from genlab.data.loader import SeededOrder
from genlab.data.readers import decode_files, image_files, same_channels, stack
from genlab.errors import DataError

PAIR_BUILTINS = {
    "edges2digits": "scikit-learn's digits at 32x32: the edge map (Sobel) -> the digit; 10 classes, no download",
    "edges2shapes": "genlab's shapes (RGB 32x32): the edge map -> the coloured shape (data.count pairs)",
    "inpaint-digits": "digits at 32x32 with a random square hidden (mid-grey) -> the whole digit",
    "colorize-shapes": "genlab's shapes in grey -> in colour (data.count pairs)",
}
PAIR_LAYOUTS = ("a folder with A/ and B/ sub-folders of PNG/JPEG images whose file names match, or a folder of "
                "images with A and B side by side (A on the left, width twice the height: the pix2pix layout)")
DIGITS_SIZE = 32          # the digits built-ins are resized from 8x8 to this (a U-Net needs room to go down)
EDGE_THRESHOLD = 0.25     # a pixel is an edge where the Sobel magnitude passes this share of the image's largest
HOLE = 0.5                # inpaint-digits hides a square of this share of the side


@dataclass
class PairDataset:
    a: torch.Tensor                      # float32 (N, Ca, H, W) in [-1, 1]: the inputs
    b: torch.Tensor                      # float32 (N, Cb, H, W) in [-1, 1]: the targets
    labels: torch.Tensor | None = None   # int64 (N,), or None
    classes: list[str] = field(default_factory=list)
    name: str = ""
    source: str = ""

    def __post_init__(self):
        if self.a.ndim != 4 or self.b.ndim != 4 or len(self.a) != len(self.b):
            raise DataError(f"{self.name}: pairs must be two (N, C, H, W) tensors of one length; got "
                            f"{tuple(self.a.shape)} and {tuple(self.b.shape)}")
        if self.a.shape[-2:] != self.b.shape[-2:] or self.a.shape[-1] != self.a.shape[-2]:
            raise DataError(f"{self.name}: inputs are {tuple(self.a.shape[-2:])} and targets "
                            f"{tuple(self.b.shape[-2:])}; expected square images of one size (pass --image-size N)")

    def __len__(self) -> int:
        return len(self.a)

    @property
    def image_size(self) -> int:
        return self.a.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.labels is not None else 0

    def subset(self, index: torch.Tensor) -> "PairDataset":
        labels = self.labels[index] if self.labels is not None else None
        return PairDataset(self.a[index], self.b[index], labels, list(self.classes), self.name, self.source)

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.a.contiguous().numpy().tobytes())
        h.update(self.b.contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "count": len(self), "in_channels": self.a.shape[1],
                "out_channels": self.b.shape[1], "image_size": self.image_size, "classes": list(self.classes)}


# ---------------------------------------------------------------------------------------------
# What the built-ins do to an image

def grey(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, H, W): ITU-R BT.601 luma for RGB, the image itself for grey."""
    if images.shape[1] == 1:
        return images
    return (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


def edges(images: torch.Tensor, threshold: float = EDGE_THRESHOLD) -> torch.Tensor:
    """White edges on black (N, 1, H, W) in {-1, 1}: where the Sobel gradient magnitude of the grey image passes
    `threshold` of its largest in that image (a flat image has none)."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    k = torch.stack([kx, kx.T]).unsqueeze(1)          # (2, 1, 3, 3): d/dx, d/dy
    g = F.conv2d(F.pad(grey(images), (1, 1, 1, 1), mode="replicate"), k)
    mag = g.pow(2).sum(1, keepdim=True).sqrt()
    top = mag.flatten(1).amax(1).view(-1, 1, 1, 1)
    return torch.where((mag > threshold * top) & (top > 1e-6), 1.0, -1.0)


def hide_square(images: torch.Tensor, seed: int, share: float = HOLE) -> torch.Tensor:
    """The images with a square of `share` of the side at a seeded random place set to mid-grey (0)."""
    n, _, s, _ = images.shape
    side = max(1, int(round(s * share)))
    g = torch.Generator().manual_seed(seed)
    top, left = (torch.randint(0, s - side + 1, (2, n), generator=g))
    rows, cols = torch.arange(s).view(1, s, 1), torch.arange(s).view(1, 1, s)
    hole = ((rows >= top.view(-1, 1, 1)) & (rows < (top + side).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1)) & (cols < (left + side).view(-1, 1, 1)))
    return images.masked_fill(hole.unsqueeze(1), 0.0)


def builtin_pairs(cfg: DataConfig) -> PairDataset:
    name = cfg.name
    if name.endswith("digits"):
        d = digits()
        target = resize_square(d.images, cfg.image_size or DIGITS_SIZE)
        source = "sklearn.datasets.load_digits, resized"
    else:
        d = shapes(cfg.count, cfg.seed, budget_gb=cfg.memory_budget_gb)
        target = resize_square(d.images, cfg.image_size) if cfg.image_size else d.images
        source = f"genlab shapes (count={cfg.count}, seed={cfg.seed})"
    inputs = {"edges2digits": edges, "edges2shapes": edges, "colorize-shapes": grey,
              "inpaint-digits": lambda x: hide_square(x, cfg.seed)}[name](target)
    return PairDataset(inputs, target, d.labels, list(d.classes), name, f"{source}; {PAIR_BUILTINS[name]}")


# ---------------------------------------------------------------------------------------------
# Folders

def _images_under(folder: Path) -> dict[str, Path]:
    return {str(f.relative_to(folder)): f for f in image_files(folder)}


def read_pair_folder(folder: Path, image_size: int = 0, budget_gb: float = DataConfig.memory_budget_gb) -> PairDataset:
    """Pairs from `folder`: A/ and B/ with matching names, or side-by-side images (see PAIR_LAYOUTS)."""
    a_dir, b_dir = folder / "A", folder / "B"
    if a_dir.is_dir() and b_dir.is_dir():
        a_files, b_files = _images_under(a_dir), _images_under(b_dir)
        lone = [f"A/{n}" for n in sorted(set(a_files) - set(b_files))] + \
               [f"B/{n}" for n in sorted(set(b_files) - set(a_files))]
        if lone:
            raise DataError(f"{folder}: {len(lone)} images have no partner of the same name in the other folder "
                            f"(first: {lone[0]}); expected {PAIR_LAYOUTS}")
        names = sorted(a_files)
        if not names:
            raise DataError(f"{folder}: A/ and B/ hold no PNG or JPEG images; expected {PAIR_LAYOUTS}")
        a_arr, a_kept = decode_files([a_files[n] for n in names], a_dir, budget_gb / 2)
        b_arr, b_kept = decode_files([b_files[n] for n in names], b_dir, budget_gb / 2)
        both = {str(f.relative_to(a_dir)) for f in a_kept} & {str(f.relative_to(b_dir)) for f in b_kept}
        a_arr = [x for x, f in zip(a_arr, a_kept) if str(f.relative_to(a_dir)) in both]
        b_arr = [x for x, f in zip(b_arr, b_kept) if str(f.relative_to(b_dir)) in both]
        kept = [a_dir / n for n in names if n in both]
    else:
        files = list(_images_under(folder).values())
        if not files:
            raise DataError(f"{folder}: no images found; expected {PAIR_LAYOUTS}")
        arrays, kept = decode_files(files, folder, budget_gb)
        for x, f in zip(arrays, kept):
            if x.shape[1] % 2 or x.shape[1] != 2 * x.shape[0]:
                raise DataError(f"{f}: {x.shape[1]}x{x.shape[0]} is not two square images side by side; expected "
                                f"{PAIR_LAYOUTS}")
        a_arr = [x[:, : x.shape[1] // 2] for x in arrays]
        b_arr = [x[:, x.shape[1] // 2:] for x in arrays]
    check_memory(sum(x.size + y.size for x, y in zip(a_arr, b_arr)) * 4, budget_gb, str(folder), "these pairs")
    a = stack(same_channels(a_arr), kept, image_size, folder, budget_gb)
    b = stack(same_channels(b_arr), kept, image_size, folder, budget_gb)
    if image_size:
        a, b = resize_square(a, image_size), resize_square(b, image_size)
    return PairDataset(a, b, None, [], str(folder), str(folder.resolve()))


def load_pairs(cfg: DataConfig) -> PairDataset:
    """The pairs `cfg.name` names (a built-in or a folder), resized to data.image_size when it is set, and turned
    around when data.direction is BtoA."""
    if cfg.direction not in ("AtoB", "BtoA"):
        raise DataError(f"data.direction={cfg.direction!r}; expected AtoB (translate A into B) or BtoA")
    if cfg.image_size < 0:
        raise DataError(f"data.image_size={cfg.image_size}; expected 0 (native size) or a positive size")
    path = Path(cfg.name).expanduser()
    if cfg.name in PAIR_BUILTINS:
        ds = builtin_pairs(cfg)
    elif cfg.name and path.is_dir():
        ds = read_pair_folder(path, cfg.image_size, cfg.memory_budget_gb)
    else:
        raise DataError(f"unknown image-pair dataset {cfg.name!r}: not a built-in ({', '.join(PAIR_BUILTINS)}) "
                        f"and not a folder; expected {PAIR_LAYOUTS}")
    if cfg.direction == "BtoA":
        ds = PairDataset(ds.b, ds.a, ds.labels, ds.classes, ds.name, ds.source)
    return ds


def split_pairs(cfg: DataConfig) -> tuple[PairDataset, PairDataset, PairDataset]:
    """(all pairs, training split, held-out split), deterministic in data.seed."""
    ds = load_pairs(cfg)
    train, val = split(ds, cfg.val_fraction, cfg.seed)
    return ds, train, val


class PairLoader:
    """Batch i of rank r: {"a": inputs, "b": targets, "y": labels or None}; a pair flips as one (data.flip)."""

    def __init__(self, ds: PairDataset, batch_size: int, seed: int, *, rank: int = 0, world: int = 1,
                 flip: bool = False, device: torch.device = torch.device("cpu")):
        self.order = SeededOrder(len(ds), batch_size, seed, rank, world, f"{ds.name}: {len(ds)} training pairs")
        self.ds, self.flip, self.device = ds, flip, device
        self.per_epoch = self.order.per_epoch
        self.unit = "pair"

    def batch(self, i: int) -> dict:
        idx = self.order.indices(i)
        a, b = self.ds.a[idx], self.ds.b[idx]
        if self.flip:
            m = (torch.rand(len(idx), generator=self.order.generator(i)) < 0.5)[:, None, None, None]
            a, b = torch.where(m, a.flip(-1), a), torch.where(m, b.flip(-1), b)
        y = self.ds.labels[idx].to(self.device) if self.ds.labels is not None else None
        return {"a": a.to(self.device), "b": b.to(self.device), "y": y}


def pair_batches(ds: PairDataset, batch_size: int, device: torch.device, limit: int | None = None):
    """The held-out pairs in order, as batches (validation)."""
    n = len(ds) if limit is None else min(limit, len(ds))
    for i in range(0, n, batch_size):
        j = min(n, i + batch_size)
        yield {"a": ds.a[i:j].to(device), "b": ds.b[i:j].to(device),
               "y": None if ds.labels is None else ds.labels[i:j].to(device)}


def as_inputs(images: torch.Tensor, channels: int, size: int, where: str) -> torch.Tensor:
    """Images a user gives to translate (N, C, H, W) in [-1, 1] -> the model's input channels and size (grey <->
    RGB converted, resized and padded to square)."""
    if images.shape[1] not in (1, 3) or channels not in (1, 3):
        raise DataError(f"{where}: {images.shape[1]}-channel images for a model of {channels}-channel inputs; "
                        "expected grey or RGB images")
    if images.shape[1] == 3 and channels == 1:
        images = grey(images)
    elif images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    if tuple(images.shape[-2:]) != (size, size):
        images = resize_square(images, size)
    return images.contiguous()


__all__ = ["PairDataset", "PAIR_BUILTINS", "PAIR_LAYOUTS", "load_pairs", "split_pairs", "PairLoader",
           "pair_batches", "edges", "grey", "hide_square", "read_pair_folder", "as_inputs"]
