"""Classic image augmentation, the baseline that generated data has to beat (`genlab augment`): random shifts,
random crops (a zoom in), Gaussian noise and horizontal flips, drawn per image from a seeded generator.

Flips are not label-preserving for every dataset (a flipped 2 is not a 2), so they are opt-in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genlab.data.images import ImageDataset
from genlab.data.loader import BatchLoader
from genlab.errors import DataError

OPS = {"shift": "translate by up to 1/8 of the side", "crop": "zoom into a random crop of 80-100% of the side",
       "noise": "add Gaussian noise (sigma 0.1 of the [-1, 1] range)", "flip": "mirror left-right"}
SHIFT, MIN_CROP, NOISE = 0.125, 0.8, 0.1


def check_ops(ops: list[str] | tuple[str, ...]) -> list[str]:
    unknown = [o for o in ops if o not in OPS]
    if unknown or not ops:
        raise DataError(f"classic augmentation {','.join(ops) or '(none)'}: expected a list of "
                        f"{', '.join(OPS)}")
    return list(ops)


def augment(x: torch.Tensor, ops: list[str], generator: torch.Generator) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] -> the same with each op drawn per image; the background (-1) fills
    what a shift or crop uncovers."""
    n = len(x)
    if "shift" in ops or "crop" in ops:
        scale = (torch.rand(n, generator=generator) * (1 - MIN_CROP) + MIN_CROP if "crop" in ops
                 else torch.ones(n))
        shift = ((torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * SHIFT if "shift" in ops
                 else torch.zeros(n, 2))
        theta = torch.zeros(n, 2, 3)   # affine_grid's output -> input map: zoom by 1/scale, then translate
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x + 1, grid, padding_mode="zeros", align_corners=False) - 1
    if "flip" in ops:
        x = torch.where((torch.rand(n, generator=generator) < 0.5)[:, None, None, None], x.flip(-1), x)
    if "noise" in ops:
        x = (x + NOISE * 2 * torch.randn(x.shape, generator=generator)).clamp(-1, 1)
    return x


class AugmentedLoader(BatchLoader):
    """A BatchLoader whose batch i is augmented with a generator seeded by (seed, i): resumable like it."""

    def __init__(self, ds: ImageDataset, batch_size: int, seed: int, ops: list[str], **kwargs):
        super().__init__(ds, batch_size, seed, **kwargs)
        self.ops = check_ops(ops)

    def batch(self, i: int) -> dict:
        b = super().batch(i)
        g = torch.Generator().manual_seed((self.seed * 104_729 + i) * 131 + self.rank)
        return {**b, "x": augment(b["x"].cpu(), self.ops, g).to(self.device)}


def merged(*parts: ImageDataset) -> ImageDataset:
    """The datasets' images and labels one after the other (the classes of the first)."""
    if any(p.labels is None for p in parts):
        raise DataError("merging image sets needs labels on every part")
    return ImageDataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                        list(parts[0].classes), "+".join(dict.fromkeys(p.name for p in parts)), parts[0].source)
