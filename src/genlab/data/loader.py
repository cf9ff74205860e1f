"""Deterministic in-memory batches: batch i of rank r depends only on (seed, i, r).

Because the order is a pure function of the step, resuming needs no loader state and a resumed
run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import torch

from genlab.data.images import ImageDataset
from genlab.errors import DataError


class BatchLoader:
    def __init__(self, ds: ImageDataset, batch_size: int, seed: int, *, rank: int = 0, world: int = 1,
                 flip: bool = False, device: torch.device = torch.device("cpu")):
        if len(ds) < batch_size * world:
            raise DataError(f"{ds.name}: {len(ds)} training images cannot fill one batch of {batch_size} "
                            f"x {world} process(es); lower train.batch_size")
        self.ds, self.bs, self.seed, self.rank, self.world = ds, batch_size, seed, rank, world
        self.flip, self.device = flip, device
        self.per_epoch = len(ds) // (batch_size * world)   # drop the ragged last batch
        self._epoch, self._perm = -1, None

    def batch(self, i: int) -> dict:
        """The i-th micro-batch of this rank: {"x": (B, C, H, W), "y": (B,) or None}."""
        epoch, j = divmod(i, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.ds), generator=g)
        start = (j * self.world + self.rank) * self.bs
        idx = self._perm[start:start + self.bs]
        x = self.ds.images[idx]
        if self.flip:  # per-image random horizontal flips, seeded by (seed, i, rank)
            g = torch.Generator().manual_seed((self.seed * 7919 + i) * 131 + self.rank)
            mask = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        y = self.ds.labels[idx].to(self.device) if self.ds.labels is not None else None
        return {"x": x.to(self.device), "y": y}


def eval_batches(ds: ImageDataset, batch_size: int, device: torch.device, limit: int | None = None):
    """Fixed batches over (the first `limit` of) a dataset, for validation."""
    n = len(ds) if limit is None else min(limit, len(ds))
    for s in range(0, n, batch_size):
        y = ds.labels[s:min(n, s + batch_size)].to(device) if ds.labels is not None else None
        yield {"x": ds.images[s:min(n, s + batch_size)].to(device), "y": y}
