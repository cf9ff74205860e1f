"""torchrun / DistributedDataParallel glue: one process per rank, gloo on CPU, nccl on CUDA.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them genlab runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Only rank 0 writes files, logs and shows progress."""
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank (for stop and NaN decisions)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast_int(self, value: int) -> int:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup() -> Dist:
    """Join the process group when launched by torchrun; pick CUDA when present (no flag needed)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, torch.device(f"cuda:{local}") if cuda else torch.device("cpu"))


def teardown(d: Dist) -> None:
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
