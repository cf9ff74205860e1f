"""Deterministic in-memory batches: batch i of rank r depends only on (seed, i, r).

Because the order is a pure function of the step, resuming needs no loader state and a resumed
run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import torch

from genlab.data.images import ImageDataset
from genlab.errors import DataError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's permutation: a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class SeededOrder:
    """Which items batch i of rank r holds: a per-epoch seeded permutation dealt out to the ranks, the ragged
    last batch dropped. Every in-memory loader (images, clips, text pairs, labelled texts) shares it."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int, too_few: str):
        if n < batch_size * world:
            raise DataError(f"{too_few} cannot fill one batch of {batch_size} x {world} process(es); "
                            "lower train.batch_size")
        self.n, self.bs, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_epoch = n // (batch_size * world)
        self._epoch, self._perm = -1, None

    def generator(self, i: int) -> torch.Generator:
        """The generator of batch i's random draws on this rank (flips, crops, audio augmentation): a function of
        (seed, i, rank) only, so a resumed run draws what an uninterrupted one would."""
        return torch.Generator().manual_seed((self.seed * 7919 + i) * 131 + self.rank)

    def indices(self, i: int) -> torch.Tensor:
        epoch, j = divmod(i, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=epoch_generator(self.seed, epoch))
        start = (j * self.world + self.rank) * self.bs
        return self._perm[start:start + self.bs]


class BatchLoader:
    def __init__(self, ds: ImageDataset, batch_size: int, seed: int, *, rank: int = 0, world: int = 1,
                 flip: bool = False, device: torch.device = torch.device("cpu")):
        self.order = SeededOrder(len(ds), batch_size, seed, rank, world,
                                 f"{ds.name}: {len(ds)} training images")
        self.ds, self.seed, self.rank, self.flip, self.device = ds, seed, rank, flip, device
        self.per_epoch = self.order.per_epoch

    def batch(self, i: int) -> dict:
        """The i-th micro-batch of this rank: {"x": (B, C, H, W), "y": (B,) or None}."""
        idx = self.order.indices(i)
        x = self.ds.images[idx]
        if self.flip:  # per-image random horizontal flips, seeded by (seed, i, rank)
            mask = torch.rand(len(idx), generator=self.order.generator(i)) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        y = self.ds.labels[idx].to(self.device) if self.ds.labels is not None else None
        return {"x": x.to(self.device), "y": y}


def eval_batches(ds: ImageDataset, batch_size: int, device: torch.device, limit: int | None = None):
    """Fixed batches over (the first `limit` of) a dataset, for validation."""
    n = len(ds) if limit is None else min(limit, len(ds))
    for s in range(0, n, batch_size):
        y = ds.labels[s:min(n, s + batch_size)].to(device) if ds.labels is not None else None
        yield {"x": ds.images[s:min(n, s + batch_size)].to(device), "y": y}
