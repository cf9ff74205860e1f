"""Dynamic batching: concurrent requests for one model merged into one forward pass.

Each model has a `Batcher`: requests wait in a queue as `Job`s; a loop takes the oldest job, gives
others up to `max_wait` seconds to arrive, then runs every waiting job with the same `key` (the
settings that must match to share a forward pass, e.g. diffusion steps and guidance), up to
`max_rows` rows (images or sequences), in one call of `run` on the model's own worker thread. Jobs
whose client gave up (timeout, disconnect) before their batch started are dropped. `run` returns
one result per job, or raises: then the batch's jobs are run one by one, so that only the request
at fault fails. `observe(name, kind, jobs, results)` sees every finished batch (metrics).

The families' batched computations (genlab.serve.workers) draw each job's noise from its own seeded
generator, so a request gets the samples it would get alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import torch

log = logging.getLogger("genlab.serve")


@dataclass
class Job:
    kind: str                  # "images", "text", ... : the worker function that runs it
    key: Hashable              # jobs share a forward pass only when kind and key are equal
    rows: int                  # its share of the batch (images or sequences)
    payload: Any
    future: asyncio.Future = field(default=None)  # type: ignore[assignment]
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def cancelled(self) -> bool:
        return self.future.done()

    def joins(self, other: "Job") -> bool:
        """Whether this job may share a forward pass with `other`."""
        return (self.kind, self.key) == (other.kind, other.key)


class Batcher:
    def __init__(self, name: str, run: Callable[[str, list[Job]], list[Any]], *, max_rows: int,
                 max_wait: float, observe: Callable[[str, str, list[Job], list[Any]], None] | None = None):
        self.name, self.run, self.max_rows, self.max_wait = name, run, max_rows, max_wait
        self.observe = observe or (lambda *a: None)
        self.waiting: list[Job] = []
        self.wake = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"genlab-{name}")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        return len(self.waiting)

    def submit(self, kind: str, key: Hashable, rows: int, payload: Any) -> Job:
        """Queue a job; await `job.future` for its result (cancel it to give up)."""
        job = Job(kind, key, rows, payload, asyncio.get_running_loop().create_future())
        self.waiting.append(job)
        self.wake.set()
        return job

    def _take(self) -> list[Job]:
        """The oldest job and every later one that may join it and fits in max_rows."""
        first = self.waiting[0]
        batch, rows = [first], first.rows  # a job larger than max_rows still runs, alone
        for job in self.waiting[1:]:
            if job.joins(first) and rows + job.rows <= self.max_rows:
                batch.append(job)
                rows += job.rows
        taken = set(map(id, batch))
        self.waiting = [j for j in self.waiting if id(j) not in taken]
        return batch

    def _full(self, first: Job) -> bool:
        return sum(j.rows for j in self.waiting if j.joins(first)) >= self.max_rows

    async def _loop(self) -> None:
        while True:
            try:
                await self._next()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - never let the loop die: every later request would hang
                log.exception("batcher %s: unexpected error", self.name)

    async def _next(self) -> None:
        self.waiting = [j for j in self.waiting if not j.cancelled]
        if not self.waiting:
            self.wake.clear()
            await self.wake.wait()
            return
        first = self.waiting[0]
        delay = first.queued_at + self.max_wait - time.monotonic()
        if delay > 0 and not self._full(first):
            await asyncio.sleep(delay)
            return  # look again: jobs may have arrived or given up
        batch = [j for j in self._take() if not j.cancelled]
        if batch:
            await self._execute(batch)

    async def _execute(self, batch: list[Job]) -> None:
        """Run a batch; if it fails, run its jobs one by one, so one bad request fails alone."""
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self._run, batch[0].kind, batch)
        except Exception as e:  # noqa: BLE001 - reported to the waiting requests, the server goes on
            if len(batch) > 1:
                for job in batch:
                    if not job.cancelled:
                        await self._execute([job])
                return
            results, error = None, e
        else:
            error = None
            self.observe(self.name, batch[0].kind, batch, results)
        for i, job in enumerate(batch):
            if job.future.done():
                continue
            if error is not None:
                job.future.set_exception(error if not isinstance(error, StopIteration) else RuntimeError(error))
            else:
                job.future.set_result(results[i])

    def _run(self, kind: str, batch: list[Job]) -> list[Any]:
        with torch.inference_mode():  # grad mode is per thread: set it in the worker
            return self.run(kind, batch)
