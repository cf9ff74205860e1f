"""Attention text classifier (`textclf`): a Transformer encoder with attention pooling.

Token embeddings plus learned positions (as in BERT) go through pre-norm `layers.Block`s with
non-causal self-attention that ignores padding. Attention pooling (Yang et al. 2016, "Hierarchical
attention networks") then scores every token against one learned query,
    u_i = tanh(W h_i + b),  a_i = softmax_i(u_i . q)  over the non-pad tokens,  s = sum_i a_i h_i,
and a linear layer maps s to class logits. The pooling weights `a` are what `predict` returns as
the attention behind each prediction: zero on padding and summing to one per row.

Not a generator (a `Model`, not a `GenerativeModel`): `predict` instead of `sample`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.tokenizers import PAD
from genlab.errors import UsageError
from genlab.models.base import Model
from genlab.models.graphs import BATCH, Graph, lengths_upto
from genlab.models.layers import Block


@dataclass
class TextClfConfig:
    family: str = "textclf"
    vocab_size: int = 128    # set from the data
    num_classes: int = 2     # set from the data
    max_len: int = 256       # max tokens per text (learned positions)
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.1
    d_ff: int = 0             # MLP hidden width; 0 = 4 * d_model (less after `genlab compress --structured`)


PRESETS = {
    "tiny": {"model.n_layer": 1, "model.n_head": 4, "model.d_model": 64,
             "train.batch_size": 64, "train.steps": 600, "train.lr": 1e-3},
    "small": {"model.n_layer": 2, "model.n_head": 4, "model.d_model": 128,
              "train.batch_size": 64, "train.steps": 2500, "train.lr": 1e-3},
    "base": {"model.n_layer": 4, "model.n_head": 8, "model.d_model": 256,
             "train.batch_size": 64, "train.steps": 8000, "train.lr": 5e-4, "train.warmup_steps": 500},
}


class AttentionPool(nn.Module):
    """(B, T, D) token states + pad mask (B, T) -> pooled (B, D) and weights (B, T)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.query = nn.Parameter(torch.randn(d_model) * d_model ** -0.5)

    def forward(self, h: torch.Tensor, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.tanh(self.proj(h)) @ self.query                      # (B, T)
        weights = scores.float().masked_fill(pad_mask, float("-inf")).softmax(-1)
        weights = weights.nan_to_num(0.0)                                    # an all-padding row pools nothing
        return (weights.to(h.dtype)[..., None] * h).sum(1), weights


class TextClf(Model):
    """Transformer encoder + attention pooling + linear classifier. Batches: {"ids": (B, T), "y": (B,)}."""

    family = "textclf"
    ADAPTER_TARGETS = (nn.Linear,)

    def __init__(self, config: TextClfConfig):
        c = config
        if c.num_classes < 2:
            raise UsageError(f"textclf needs labelled data with at least 2 classes; got num_classes={c.num_classes}")
        if c.vocab_size < 5:
            raise UsageError(f"vocab_size={c.vocab_size}; the tokenizer reserves ids 0..3, so expected > 4")
        super().__init__(config)
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb = nn.Embedding(c.max_len, c.d_model)
        for emb in (self.tok_emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=1.0)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.d_model, c.n_head, c.dropout, d_ff=c.d_ff) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.pool = AttentionPool(c.d_model)
        self.head = nn.Linear(c.d_model, c.num_classes)

    def _ids(self, ids) -> torch.Tensor:
        """LongTensor (B, T) or list[list[int]] (padded here with 0) -> (B, T) on the model's device."""
        if not torch.is_tensor(ids):
            rows = [list(r) for r in ids]
            out = torch.zeros(len(rows), max(1, max((len(r) for r in rows), default=0)), dtype=torch.long)
            for i, r in enumerate(rows):
                out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            ids = out
        ids = ids.to(self.pos_emb.weight.device)
        if ids.dim() != 2:
            raise UsageError(f"ids of shape {tuple(ids.shape)}; expected (batch, tokens)")
        if ids.shape[1] > self.config.max_len:
            raise UsageError(f"texts of {ids.shape[1]} tokens; this model's max_len is {self.config.max_len} "
                             "(truncate them or train with a larger model.max_len)")
        return ids

    def forward_logits(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) -> (class logits (B, K), pooling weights (B, T))."""
        pad = ids == PAD
        attn_pad = pad & ~pad.all(1, keepdim=True)  # all-padding rows attend to everything instead of NaN
        x = self.drop(self.tok_emb(ids) + self.pos_emb.weight[: ids.shape[1]])
        for block in self.blocks:
            x = block(x, pad_mask=attn_pad)
        pooled, weights = self.pool(self.ln_f(x), pad)
        return self.head(self.drop(pooled)), weights

    def loss(self, batch: dict) -> dict:
        if batch.get("y") is None:
            raise UsageError("textclf trains on labelled texts; this batch has no labels 'y'")
        logits, _ = self.forward_logits(self._ids(batch["ids"]))
        loss = F.cross_entropy(logits.float(), batch["y"])
        return {"loss": loss, "acc": (logits.argmax(1) == batch["y"]).float().mean().detach()}

    @torch.no_grad()
    def predict(self, ids) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts (B, T) padded with 0 (or a list of id lists) -> (class probabilities (B, K),
        pooling attention weights (B, T): zero on padding, summing to one per row)."""
        was_training = self.training
        self.eval()
        try:
            logits, weights = self.forward_logits(self._ids(ids))
        finally:
            self.train(was_training)
        return F.softmax(logits.float(), dim=1), weights

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """model.onnx: ids (batch, length) int64, 0 = padding -> probs (batch, num_classes), weights
        (batch, length) (the attention pooling weights)."""
        c = self.config

        def example(b: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
            ids = torch.randint(4, c.vocab_size, (b, length), generator=g)
            keep = torch.randint(1, length + 1, (b, 1), generator=g)   # each row padded after 1..length tokens
            keep[0] = length                                           # and one row without padding
            return (torch.where(torch.arange(length) < keep, ids, torch.zeros_like(ids)),)
        return [Graph("model", _ProbsAndWeights(self), [("ids", "int64", [BATCH, "length"])],
                      [("probs", "float32", [BATCH, c.num_classes]), ("weights", "float32", [BATCH, "length"])],
                      example, lengths_upto(min(c.max_len, 64), 3))]

    def onnx_extras(self) -> dict:
        return {}


class _ProbsAndWeights(nn.Module):
    """The exported network: ids -> (class probabilities, pooling weights), as `predict`."""

    def __init__(self, model: TextClf):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, weights = self.model.forward_logits(ids)
        return F.softmax(logits.float(), dim=1), weights
