"""LSTM language model (Hochreiter & Schmidhuber 1997; as a word/char LM: Zaremba et al. 2014).

embedding -> dropout -> multi-layer `nn.LSTM` -> dropout -> linear head, the head optionally tied to
the embedding (Press & Wolf 2017; Inan et al. 2017) — possible because embedding and hidden size
are both `d_model`.

Batches are {"ids": (B, T+1)} as for gpt.py; each training window starts from a zero state, and
`block_size` is only the training window length (truncated back-propagation through time).
Generation carries the hidden state (h, c): the prompt is read once, then one token per step, and
the model conditions on the whole history, however long. `use_cache=False` re-runs the whole
sequence from a zero state every step instead (the reference path; quadratic in length).
Generation helpers (`stream`, `sample`, the loss, prompt parsing) are shared with gpt.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genlab.data.tokenizers import PAD
from genlab.errors import UsageError
from genlab.models.gpt import LanguageModel, RowsStep, StepFn, next_token_loss
from genlab.models.graphs import BATCH, Graph


@dataclass
class LSTMConfig:
    family: str = "lstm"
    vocab_size: int = 256     # set from the data (includes <pad> <bos> <eos> <unk>)
    block_size: int = 128     # training window (truncated BPTT length); generation has no limit
    n_layer: int = 2
    d_model: int = 256        # embedding and hidden size
    dropout: float = 0.0      # on the embedding, between LSTM layers and before the head
    tie_weights: bool = True  # share the embedding with the output head


PRESETS = {
    "tiny": {"model.n_layer": 1, "model.d_model": 64, "model.block_size": 64, "model.dropout": 0.0,
             "train.lr": 3e-3, "train.batch_size": 32, "train.warmup_steps": 20, "train.steps": 600},
    "small": {"model.n_layer": 2, "model.d_model": 256, "model.block_size": 128, "model.dropout": 0.1,
              "train.lr": 2e-3, "train.batch_size": 32, "train.warmup_steps": 50, "train.steps": 3000},
    "base": {"model.n_layer": 2, "model.d_model": 512, "model.block_size": 128, "model.dropout": 0.3,
             "train.lr": 1e-3, "train.batch_size": 64, "train.warmup_steps": 100, "train.steps": 10000},
}

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (n_layer, B, d_model)


class LSTM(LanguageModel):
    """LSTM language model. `logits(ids, state)` -> (logits (B, T, V), new state)."""

    family = "lstm"

    def __init__(self, config: LSTMConfig):
        c = config
        if c.vocab_size < 5:
            raise UsageError(f"vocab_size={c.vocab_size}; the 4 reserved tokens need at least one more")
        if c.n_layer < 1:
            raise UsageError(f"n_layer={c.n_layer}; expected at least one LSTM layer")
        super().__init__(config)
        self.emb = nn.Embedding(c.vocab_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.rnn = nn.LSTM(c.d_model, c.d_model, c.n_layer, batch_first=True,
                           dropout=c.dropout if c.n_layer > 1 else 0.0)
        self.head = nn.Linear(c.d_model, c.vocab_size)
        nn.init.uniform_(self.emb.weight, -0.1, 0.1)  # AWD-LSTM's embedding init
        nn.init.zeros_(self.head.bias)
        if c.tie_weights:
            self.head.weight = self.emb.weight
        else:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)

    def logits(self, ids: torch.Tensor, state: State | None = None,
               last_only: bool = False) -> tuple[torch.Tensor, State]:
        """ids (B, T), starting from `state` (None = zeros) -> logits (B, T, V) (or (B, 1, V) with
        `last_only`) and the state after the last token. Running a sequence in pieces, passing the
        state on, equals one full pass."""
        out, state = self.rnn(self.drop(self.emb(ids)), state)
        if last_only:
            out = out[:, -1:]
        return self.head(self.drop(out)), state

    def loss(self, batch: dict) -> dict:
        ids = batch["ids"]
        return {"loss": next_token_loss(self.logits(ids[:, :-1])[0], ids[:, 1:])}

    def decoder(self, use_cache: bool) -> StepFn:
        """The step function for `stream`: with the cache, read only the unseen tokens from the
        carried (h, c); without it, re-run the whole sequence from a zero state."""
        state: State | None = None
        seen = 0

        def step(seq: torch.Tensor) -> torch.Tensor:
            nonlocal state, seen
            if not use_cache:
                return self.logits(seq, last_only=True)[0][:, -1]
            out, state = self.logits(seq[:, seen:], state, last_only=True)
            seen = seq.shape[1]
            return out[:, -1]

        return step

    def rows_decoder(self, prompts: list[list[int]]) -> RowsStep:
        """Each prompt is read alone (no padding ever enters a state); their (h, c) are then stacked
        and every further step runs all rows in one call."""
        state: State | None = None

        def step(tokens: list[int | None] | None) -> torch.Tensor:
            nonlocal state
            if tokens is None:
                outs = [self.logits(torch.tensor([p], device=self.device), last_only=True) for p in prompts]
                state = (torch.cat([s[0] for _, s in outs], 1), torch.cat([s[1] for _, s in outs], 1))
                return torch.cat([o[:, -1] for o, _ in outs])
            ids = [PAD if t is None else t for t in tokens]  # an ended row's logits are ignored
            out, state = self.logits(torch.tensor(ids, device=self.device)[:, None], state, last_only=True)
            return out[:, -1]

        return step

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """step.onnx: token (batch,) int64, h, c (n_layer, batch, d_model) -> logits (batch, vocab), h, c."""
        c = self.config
        state = [c.n_layer, BATCH, c.d_model]

        def example(b: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
            return (torch.randint(c.vocab_size, (b,), generator=g),
                    0.5 * torch.randn(c.n_layer, b, c.d_model, generator=g),
                    0.5 * torch.randn(c.n_layer, b, c.d_model, generator=g))
        return [Graph("step", _LSTMStep(self),
                      [("token", "int64", [BATCH]), ("h", "float32", state), ("c", "float32", state)],
                      [("logits", "float32", [BATCH, c.vocab_size]), ("h_out", "float32", state),
                       ("c_out", "float32", state)], example)]

    def onnx_extras(self) -> dict:
        return {"text": {"n_layer": self.config.n_layer, "d_model": self.config.d_model,
                         "note": "start from h = c = 0, feed the prompt token by token, carry (h, c)"}}


class _LSTMStep(nn.Module):
    """The exported network: one token and the state (h, c) -> the next token's logits and the new state."""

    def __init__(self, model: LSTM):
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, (h, c) = self.model.logits(token[:, None], (h, c), last_only=True)
        return logits[:, -1], h, c
