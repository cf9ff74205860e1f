"""Deterministic text batches: batch i of rank r depends only on (seed, i, r), as in `loader.BatchLoader`.

Batches are dicts of int64 tensors with pad id 0 (see genlab.data.tokenizers for the special ids):

    LMStream      {"ids": (B, block_size + 1)}   windows of one token stream (documents joined by <eos>)
    PairBatches   {"src": (B, S), "tgt": (B, T)} src = tokens + <eos>; tgt = <bos> + tokens + <eos>
    LabelBatches  {"ids": (B, T), "y": (B,)}     tokens only

Pairs and labelled texts are right-padded to the longest row of their batch and cut to `max_len`.
Each epoch is a fresh seeded shuffle; within an epoch the ranks of a torchrun job take disjoint
slices, and the ragged end of the epoch is dropped. The `eval_*` functions yield fixed batches in
data order, for validation loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from genlab.data.loader import SeededOrder, epoch_generator
from genlab.data.tokenizers import BOS, EOS, PAD, Tokenizer
from genlab.errors import DataError


def encode_corpus(texts: Sequence[str], tok: Tokenizer, *, strict: bool = False) -> torch.Tensor:
    """Documents -> one 1-D LongTensor stream, each document followed by <eos>."""
    if not texts:
        return torch.zeros(0, dtype=torch.long)
    if hasattr(tok, "encode_array"):  # characters: one vectorised call (and at most one <unk> warning)
        ids = tok.encode_array("".join(texts), strict=strict)
        ends = np.cumsum([len(t) for t in texts])  # one id per character, so character counts are id counts
        return torch.from_numpy(np.insert(ids, ends, EOS))
    if hasattr(tok, "encode_batch"):
        parts = [np.asarray(ids, dtype=np.int64) for ids in tok.encode_batch(list(texts))]
    else:
        parts = [np.asarray(tok.encode(t, strict=strict), dtype=np.int64) for t in texts]
    eos = np.array([EOS], dtype=np.int64)
    return torch.from_numpy(np.concatenate([x for p in parts for x in (p, eos)]))


def encode_texts(texts: Sequence[str], tok: Tokenizer, *, strict: bool = False) -> list[list[int]]:
    """Each text -> its list of ids (no specials added)."""
    if not texts:
        return []
    if hasattr(tok, "encode_array"):  # characters: one vectorised call (and at most one <unk> warning)
        ids = tok.encode_array("".join(texts), strict=strict)
        return [part.tolist() for part in np.split(ids, np.cumsum([len(t) for t in texts])[:-1])]
    if hasattr(tok, "encode_batch"):
        return tok.encode_batch(list(texts))
    return [tok.encode(t, strict=strict) for t in texts]


class LMStream:
    """Random windows of a token stream: `batch(i)` -> {"ids": (B, block_size + 1)}.

    Each epoch picks a seeded phase in [0, block_size) and cuts the stream into windows starting at
    phase + k * block_size (neighbours share one token: the last target of one is the first input
    of the next), then deals them out in a seeded order; so an epoch sees every token about once,
    different epochs see different cuts, and ranks never share a window.
    """

    def __init__(self, ids: torch.Tensor, block_size: int, batch_size: int, seed: int, *, rank: int = 0,
                 world: int = 1, device: torch.device | str = "cpu"):
        if ids.ndim != 1:
            raise DataError(f"token stream must be 1-D, got shape {tuple(ids.shape)}")
        if block_size < 1:
            raise DataError(f"block_size={block_size}; expected a positive window length")
        self.ids, self.T, self.bs, self.seed = ids.long(), block_size, batch_size, seed
        self.rank, self.world, self.device = rank, world, torch.device(device)
        # Windows per epoch, the same for every phase (the largest phase leaves the least room).
        self.windows = (len(ids) - 1 - block_size) // block_size if len(ids) > block_size + 1 else 0
        if len(ids) >= block_size + 1 and self.windows == 0:
            self.windows = 1
        if self.windows < batch_size * world:
            raise DataError(f"{len(ids)} training tokens give {self.windows} window(s) of block_size+1="
                            f"{block_size + 1}, too few for one batch of {batch_size} x {world} process(es); "
                            "lower train.batch_size or the model's block_size, or use more text")
        self.per_epoch = self.windows // (batch_size * world)
        self._epoch, self._starts = -1, None

    def batch(self, i: int) -> dict:
        epoch, j = divmod(i, self.per_epoch)
        if epoch != self._epoch:
            g = epoch_generator(self.seed, epoch)
            room = len(self.ids) - (self.windows - 1) * self.T - (self.T + 1)  # phases that fit every window
            phase = int(torch.randint(0, max(1, min(self.T, room + 1)), (1,), generator=g))
            starts = phase + self.T * torch.arange(self.windows)
            self._epoch, self._starts = epoch, starts[torch.randperm(self.windows, generator=g)]
        first = (j * self.world + self.rank) * self.bs
        starts = self._starts[first:first + self.bs]
        idx = starts[:, None] + torch.arange(self.T + 1)
        return {"ids": self.ids[idx].to(self.device)}


def eval_lm(ids: torch.Tensor, block_size: int, batch_size: int, device: torch.device | str = "cpu",
            limit: int | None = None) -> Iterator[dict]:
    """Fixed non-overlapping windows from the start of a (validation) stream, `limit` windows at most.

    A stream shorter than one window gives a single shorter row.
    """
    n = len(ids)
    if n < 2:
        return
    if n < block_size + 1:
        yield {"ids": ids[None].long().to(device)}
        return
    starts = torch.arange(0, n - block_size, block_size)
    if limit is not None:
        starts = starts[:limit]
    for s in range(0, len(starts), batch_size):
        idx = starts[s:s + batch_size, None] + torch.arange(block_size + 1)
        yield {"ids": ids[idx].long().to(device)}


def _pad(rows: list[list[int]], device) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out.to(device)


def wrap_src(ids: Sequence[int], max_len: int) -> list[int]:
    """Source row: tokens (cut to max_len - 1) + <eos>."""
    return list(ids[:max_len - 1]) + [EOS]


def wrap_tgt(ids: Sequence[int], max_len: int) -> list[int]:
    """Target row: <bos> + tokens (cut to max_len - 2) + <eos>."""
    return [BOS] + list(ids[:max_len - 2]) + [EOS]


def clip_ids(ids: Sequence[int], max_len: int) -> list[int]:
    """Classifier row: tokens cut to max_len; an empty text becomes one <eos> so no row is all padding."""
    return list(ids[:max_len]) or [EOS]


class PairBatches:
    """`batch(i)` -> {"src": (B, S), "tgt": (B, T)}, S and T <= max_len, right-padded with 0."""

    def __init__(self, src_ids: list[list[int]], tgt_ids: list[list[int]], batch_size: int, seed: int, *,
                 rank: int = 0, world: int = 1, device: torch.device | str = "cpu", max_len: int = 256):
        if len(src_ids) != len(tgt_ids):
            raise DataError(f"{len(src_ids)} sources for {len(tgt_ids)} targets; expected one each")
        if max_len < 3:
            raise DataError(f"max_len={max_len}; expected at least 3 (<bos>, a token, <eos>)")
        self.src, self.tgt, self.max_len, self.device = src_ids, tgt_ids, max_len, torch.device(device)
        self.order = SeededOrder(len(src_ids), batch_size, seed, rank, world, f"{len(src_ids)} training text pairs")
        self.per_epoch = self.order.per_epoch

    def batch(self, i: int) -> dict:
        idx = self.order.indices(i).tolist()
        return {"src": _pad([wrap_src(self.src[k], self.max_len) for k in idx], self.device),
                "tgt": _pad([wrap_tgt(self.tgt[k], self.max_len) for k in idx], self.device)}


def eval_pairs(src_ids: list[list[int]], tgt_ids: list[list[int]], batch_size: int,
               device: torch.device | str = "cpu", max_len: int = 256, limit: int | None = None) -> Iterator[dict]:
    """Fixed batches over (the first `limit` of) the pairs, in order."""
    n = len(src_ids) if limit is None else min(limit, len(src_ids))
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        yield {"src": _pad([wrap_src(x, max_len) for x in src_ids[s:e]], device),
               "tgt": _pad([wrap_tgt(y, max_len) for y in tgt_ids[s:e]], device)}


class LabelBatches:
    """`batch(i)` -> {"ids": (B, T) right-padded with 0, T <= max_len, "y": (B,)}."""

    def __init__(self, ids: list[list[int]], labels: Sequence[int], batch_size: int, seed: int, *,
                 rank: int = 0, world: int = 1, device: torch.device | str = "cpu", max_len: int = 256):
        if len(ids) != len(labels):
            raise DataError(f"{len(labels)} labels for {len(ids)} texts; expected one each")
        self.ids, self.max_len, self.device = ids, max_len, torch.device(device)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.order = SeededOrder(len(ids), batch_size, seed, rank, world, f"{len(ids)} training examples")
        self.per_epoch = self.order.per_epoch

    def batch(self, i: int) -> dict:
        idx = self.order.indices(i).tolist()
        return {"ids": _pad([clip_ids(self.ids[k], self.max_len) for k in idx], self.device),
                "y": self.labels[idx].to(self.device)}


def eval_labels(ids: list[list[int]], labels: Sequence[int], batch_size: int, device: torch.device | str = "cpu",
                max_len: int = 256, limit: int | None = None) -> Iterator[dict]:
    """Fixed batches over (the first `limit` of) the labelled texts, in order."""
    n = len(ids) if limit is None else min(limit, len(ids))
    y = torch.as_tensor(list(labels[:n]), dtype=torch.long)
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        yield {"ids": _pad([clip_ids(x, max_len) for x in ids[s:e]], device), "y": y[s:e].to(device)}
