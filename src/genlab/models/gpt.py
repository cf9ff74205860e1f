"""GPT: a decoder-only Transformer language model (Radford et al. 2018/2019), nanoGPT-style.

Read top to bottom:
  - language-model helpers shared with lstm.py: token ids, the next-token loss, prompt parsing and
    `LanguageModel`, which turns a model's one-step function into `stream` (one token per step, for
    a server) and `sample` (the whole batch at once);
  - `GPTConfig` and its presets;
  - `GPT`: token embeddings, positions (rotary by default, or learned absolute embeddings), a stack of
    pre-norm causal `layers.Block`s, a final LayerNorm and a linear head tied to the token embedding
    (Press & Wolf 2017);
  - generation with a per-layer KV cache.

Batches are {"ids": (B, T+1)}: a window of the token stream; the model predicts ids[:, 1:] from
ids[:, :-1]. The loss is the mean cross-entropy in nats per token (perplexity = exp(loss)).

Context longer than `block_size`, by `model.pos`:
  - "rope" (the default): rotary positions (Su et al. 2021) make attention depend on relative positions
    only, and every layer attends to at most the block_size latest tokens (sliding-window attention, as
    in Mistral 7B). Training windows of block_size tokens are the plain causal case. Generation has no
    length limit and the KV cache stays valid at any length: each layer keeps its last block_size - 1 keys.
    The next token depends on at most `context_tokens` = n_layer * (block_size - 1) + 1 tokens (the
    windows stack), which is what `use_cache=False` recomputes, with the same result.
  - "learned" (runs written before rotary positions): learned absolute position embeddings, so a sequence
    past block_size is cropped to its last block_size tokens, which shifts every position; the KV cache is
    then stale and generation recomputes the cropped window from scratch at each further step (exactly
    what `use_cache=False` does). The cache speeds up the first block_size tokens only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.tokenizers import BOS, EOS, PAD
from genlab.errors import UnsupportedError, UsageError
from genlab.models.base import GenerativeModel
from genlab.models.controls import Control, check
from genlab.models.graphs import BATCH, Graph, lengths_upto
from genlab.models.layers import Block, rope_angles
from genlab.models.sampling import DECODING, sample_next

# ---- Language-model helpers (shared with lstm.py) ------------------------------------------------

# One decoding step: the whole sequence so far (n, L) -> next-token logits (n, V). A model's step may
# keep state between calls (a KV cache, an LSTM's hidden state) and read only the tokens it has not seen.
StepFn = Callable[[torch.Tensor], torch.Tensor]
# Decoding several independent prompts together (`LanguageModel.stream_rows`): called with None it
# reads the prompts, then with each row's new token (None for a row that has ended, whose logits
# are then ignored); returns next-token logits (B, V).
RowsStep = Callable[[list[int] | None], torch.Tensor]


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats/token) of logits (B, T, V) against targets (B, T). Padding targets
    (id 0, only at the ragged end of a stream) are ignored."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=PAD)


def prompt_ids(cond: Any, n: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    """`cond` -> a prompt (n, P) of token ids. None starts every row from <bos>; a list of ids or a
    1-D tensor is shared by all n rows; a tensor (n, P) gives each row its own prompt."""
    if cond is None:
        return torch.full((n, 1), BOS, dtype=torch.long, device=device)
    ids = torch.as_tensor(cond, device=device)
    if ids.numel() == 0:
        raise UsageError("empty prompt; pass cond=None to start from <bos>")
    if ids.is_floating_point() or ids.is_complex():
        raise UsageError(f"the prompt must hold integer token ids; got dtype {ids.dtype}")
    ids = ids.long()
    if ids.ndim == 1:
        ids = ids.expand(n, -1)
    if ids.ndim != 2 or ids.shape[0] != n:
        raise UsageError(f"prompt of shape {tuple(ids.shape)} for n={n}; give a list of ids shared by all "
                         f"rows, or a tensor (n, P) = ({n}, P)")
    if ids.min() < 0 or ids.max() >= vocab_size:
        bad = ids.min().item() if ids.min() < 0 else ids.max().item()
        raise UsageError(f"prompt holds token id {bad}; this model knows ids 0..{vocab_size - 1}")
    return ids.clone()


class LanguageModel(GenerativeModel):
    """Autoregressive generation for a model that provides `decoder(use_cache) -> StepFn`.

    `stream` yields one (n,) LongTensor of new tokens per step, so a server can send text as it is
    made; `sample` collects the stream after the prompt. A row that has produced <eos> yields <pad> (0)
    from then on; the stream ends when every row has ended or after `max_new_tokens` steps. Tokens
    are drawn by `sampling.sample_next` from `generator` (on the CPU), so a seed gives the same text
    with and without the cache and on every device.
    """

    CONTROLS = (Control("max_new_tokens", int, 200, 0, None, help="tokens to generate"), *DECODING)
    CAPABILITIES = frozenset({"stream"})   # stream_rows: token by token, many rows at once (the server's /text)

    def decoder(self, use_cache: bool) -> StepFn:
        raise NotImplementedError(f"{type(self).__name__} must implement decoder(use_cache)")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def controls(self) -> dict[str, Control]:
        """top_k up to the vocabulary size (more keeps every token)."""
        out = super().controls()
        out["top_k"] = replace(out["top_k"], max=self.config.vocab_size)
        return out

    def stream(self, n: int, *, cond: Any = None, generator: torch.Generator | None = None,
               max_new_tokens: int = 200, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               use_cache: bool = True, **controls: Any) -> Iterator[torch.Tensor]:
        """A Python generator of new tokens, one (n,) LongTensor per step. `cond`: the prompt (see
        `prompt_ids`); temperature 0 = greedy; `use_cache=False` recomputes everything each step (the
        reference path). Arguments are checked here, before the first token is asked for."""
        if controls:
            raise UnsupportedError(f"{self.family}.sample got unknown controls {', '.join(sorted(controls))}; "
                            f"valid: {', '.join([*self.controls(), 'use_cache'])}")
        check(self.controls(), max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
        if n < 1:
            raise UsageError(f"n={n}; expected at least one sequence")
        prompt = prompt_ids(cond, n, self.config.vocab_size, self.device)
        return self._decode(prompt, self.decoder(use_cache), generator, max_new_tokens,
                            dict(temperature=temperature, top_k=top_k, top_p=top_p))

    @torch.no_grad()  # on a generator function torch disables grad around each step only, not between
    def _decode(self, seq: torch.Tensor, step: StepFn, generator, max_new_tokens: int, knobs: dict):
        alive = torch.ones(seq.shape[0], dtype=torch.bool, device=seq.device)
        for _ in range(max_new_tokens):
            tok = sample_next(step(seq), generator, **knobs)
            tok = torch.where(alive, tok, torch.full_like(tok, PAD))
            alive &= tok != EOS
            yield tok
            if not alive.any():
                return
            seq = torch.cat([seq, tok[:, None]], dim=1)

    def rows_decoder(self, prompts: list[list[int]]) -> RowsStep:
        raise NotImplementedError(f"{type(self).__name__} must implement rows_decoder(prompts)")

    @torch.no_grad()
    def stream_rows(self, prompts: list[list[int]], generators: list[torch.Generator | None],
                    knobs: list[dict], max_new_tokens: list[int],
                    ended: Callable[[int], bool] | None = None) -> Iterator[list[int | None]]:
        """Decode independent prompts together, one batched forward pass per step for all rows (a
        server's dynamic batching). Yields, per step, each row's new token id, or None for a row that
        has ended (after its <eos> or its own max_new_tokens). Row i draws from generators[i] with its
        own knobs[i] (temperature, top_k, top_p), so it gets the tokens `stream(1, cond=prompts[i],
        generator=generators[i], **knobs[i])` gives alone; only the batched kernels' summation order
        differs (last-bit float differences). `ended(i)`, asked before each step, ends row i early
        (its caller has what it needs, or has gone); ended rows cost (almost) nothing further."""
        for k in knobs:
            check(self.controls(), **k)
        for p in prompts:
            prompt_ids(p, 1, self.config.vocab_size, self.device)  # checks ids and emptiness
        step = self.rows_decoder(prompts)
        alive, made = [m > 0 for m in max_new_tokens], [0] * len(prompts)
        if not any(alive):
            return
        logits = step(None)
        while True:
            new: list[int | None] = []
            for i, gen in enumerate(generators):
                if alive[i] and ended is not None and ended(i):
                    alive[i] = False
                if not alive[i]:
                    new.append(None)
                    continue
                tok = int(sample_next(logits[i:i + 1], gen, **knobs[i])[0])
                made[i] += 1
                alive[i] = tok != EOS and made[i] < max_new_tokens[i]
                new.append(tok)
            yield new
            if not any(alive):
                return
            logits = step([t if alive[i] else None for i, t in enumerate(new)])

    @torch.no_grad()
    def sample(self, n: int, *, cond: Any = None, generator: torch.Generator | None = None,
               **controls: Any) -> torch.Tensor:
        """n sequences (n, P + generated) of token ids, the prompt included (P = 1, the <bos>, when
        cond is None). Rows that ended early are padded with 0 after their <eos>. Controls as `stream`."""
        prompt = prompt_ids(cond, n, self.config.vocab_size, self.device)
        new = list(self.stream(n, cond=prompt, generator=generator, **controls))
        return torch.cat([prompt] + [t[:, None] for t in new], dim=1)


# ---- Config --------------------------------------------------------------------------------------


@dataclass
class GPTConfig:
    family: str = "gpt"
    vocab_size: int = 256     # set from the data (includes <pad> <bos> <eos> <unk>)
    block_size: int = 128     # training window; the attention window ("rope") or the number of learned positions
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    d_ff: int = 0             # MLP hidden width; 0 = 4 * d_model (less after `genlab compress --structured`)
    pos: str = "rope"         # positions: "rope" (rotary, sliding-window attention) or "learned" (absolute)

    BEFORE = {"pos": "learned"}  # runs written before rotary positions had learned absolute ones


# Presets set model size and training length together; `--set` overrides any key afterwards.
# "base" is nanoGPT's shakespeare_char model (6 x 6 heads x 384, context 256, dropout 0.2).
PRESETS = {
    "tiny": {"model.n_layer": 2, "model.n_head": 2, "model.d_model": 64, "model.block_size": 64,
             "model.dropout": 0.0, "train.lr": 1e-3, "train.batch_size": 32, "train.warmup_steps": 50,
             "train.steps": 600},
    "small": {"model.n_layer": 4, "model.n_head": 4, "model.d_model": 128, "model.block_size": 128,
              "model.dropout": 0.1, "train.lr": 6e-4, "train.batch_size": 32, "train.warmup_steps": 100,
              "train.steps": 3000},
    "base": {"model.n_layer": 6, "model.n_head": 6, "model.d_model": 384, "model.block_size": 256,
             "model.dropout": 0.2, "train.lr": 3e-4, "train.batch_size": 64, "train.warmup_steps": 200,
             "train.steps": 10000},
}

# `genlab train gpt --minutes M` with no `--preset`: the model size, context, batch and learning rate for the budget
# on a two-core CPU, measured against nanoGPT's CPU recipe on pycode and pydocs (benchmarks/budget_rule.py,
# benchmarks/RESULTS.md "A wall-clock budget that chooses the model"). Rows: (up to this many minutes, keys).
BUDGET_RULE = [
    (3.0, {"model.n_layer": 2, "model.n_head": 4, "model.d_model": 128, "model.block_size": 64,
           "model.dropout": 0.0, "train.batch_size": 32, "train.lr": 4e-3, "train.warmup_steps": 100,
           "train.beta2": 0.99, "train.weight_decay": 0.1}),
    (math.inf, {"model.n_layer": 3, "model.n_head": 4, "model.d_model": 128, "model.block_size": 64,
                "model.dropout": 0.0, "train.batch_size": 32, "train.lr": 3e-3, "train.warmup_steps": 100,
                "train.beta2": 0.99, "train.weight_decay": 0.1}),
]


def budget_preset(minutes: float) -> dict[str, Any]:
    """The preset keys BUDGET_RULE gives a wall-clock budget of `minutes` (> 0)."""
    if not minutes > 0:
        raise UsageError(f"minutes={minutes}; the budget rule needs a positive wall-clock budget")
    return dict(next(keys for upto, keys in BUDGET_RULE if minutes <= upto))


# ---- Model ---------------------------------------------------------------------------------------


class GPT(LanguageModel):
    """Decoder-only Transformer. `logits(ids)` -> (B, T, V); `loss`, `stream`, `sample` as the contract."""

    family = "gpt"
    ADAPTER_TARGETS = (nn.Linear,)  # attention and MLP projections (the head is tied to the embedding)

    def __init__(self, config: GPTConfig):
        c = config
        if c.vocab_size < 5:
            raise UsageError(f"vocab_size={c.vocab_size}; the 4 reserved tokens need at least one more")
        if c.block_size < 1:
            raise UsageError(f"block_size={c.block_size}; expected a positive context length")
        if c.pos not in ("rope", "learned"):
            raise UsageError(f"model.pos={c.pos!r}; expected 'rope' (rotary) or 'learned' (absolute embeddings)")
        if c.pos == "rope" and (c.d_model // c.n_head) % 2:
            raise UsageError(f"model.pos='rope' needs an even head width; d_model / n_head = {c.d_model // c.n_head}")
        super().__init__(config)
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb = nn.Embedding(c.block_size, c.d_model) if c.pos == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.d_model, c.n_head, c.dropout, d_ff=c.d_ff) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying (Press & Wolf 2017): one (V, D) matrix
        self.apply(self._init)
        # GPT-2: scale the residual projections by 1/sqrt(2 n_layer) (two residual adds per block),
        # so the residual stream's variance does not grow with depth
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @property
    def context_tokens(self) -> int:
        """How many of the latest tokens the next token's logits can depend on: the window recomputed
        without a cache (rotary: every layer looks block_size - 1 tokens further back)."""
        c = self.config
        return c.n_layer * (c.block_size - 1) + 1 if c.pos == "rope" else c.block_size

    @property
    def cache_limit(self) -> float:
        """The longest sequence the KV cache serves: block_size with learned positions (past it the window
        shifts every position), no limit with rotary ones."""
        return self.config.block_size if self.pos_emb is not None else math.inf

    def logits(self, ids: torch.Tensor, cache: list[dict] | None = None, start_pos: int = 0,
               last_only: bool = False, positions: torch.Tensor | None = None,
               pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) at positions start_pos..start_pos+T-1 -> logits (B, T, V) (or (B, 1, V) with
        `last_only`). `cache`: one dict per layer holding earlier keys/values; it is extended in place,
        so feeding a prompt and then one token at a time (start_pos = tokens seen) equals one full pass.
        Rows of different lengths (left-padded): `positions` (B, T) gives each token its own position
        and `pad_mask` (B, keys so far incl. the cache) is True at padding, which no token attends to.
        Learned positions end at block_size - 1; rotary ones do not end."""
        c, t = self.config, ids.shape[1]
        pos = torch.arange(start_pos, start_pos + t, device=ids.device) if positions is None else positions
        if c.pos == "learned" and int(pos.max()) >= c.block_size:
            raise UsageError(f"positions up to {int(pos.max())} exceed block_size={c.block_size}; "
                             "crop the context to its last block_size tokens")
        if cache is not None and len(cache) != len(self.blocks):
            raise UsageError(f"cache has {len(cache)} layers; this model has {len(self.blocks)}")
        x = self.tok_emb(ids)                                           # (B, T, D)
        rope, window = None, None
        if self.pos_emb is not None:
            x = x + self.pos_emb(pos)
        else:
            rope, window = rope_angles(pos, c.d_model // c.n_head), c.block_size
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, pad_mask=pad_mask, cache=None if cache is None else cache[i], rope=rope,
                      window=window)
        if last_only:
            x = x[:, -1:]
        return self.head(self.ln_f(x))                                  # (B, T, V)

    def loss(self, batch: dict) -> dict:
        ids = batch["ids"]
        if ids.shape[1] - 1 > self.config.block_size:
            raise UsageError(f"batch windows of {ids.shape[1] - 1} tokens exceed block_size="
                             f"{self.config.block_size}; the data must cut windows of block_size + 1 ids")
        return {"loss": next_token_loss(self.logits(ids[:, :-1]), ids[:, 1:])}

    def decoder(self, use_cache: bool) -> StepFn:
        """The step function for `stream`: with the cache, feed only unseen tokens at their positions
        (learned positions: while the sequence fits in block_size); otherwise run the last
        `context_tokens` tokens from scratch."""
        bs = self.cache_limit
        window = self.context_tokens
        cache: list[dict] = [{} for _ in self.blocks]
        seen = 0  # positions fed through the cache

        def step(seq: torch.Tensor) -> torch.Tensor:
            nonlocal seen
            if use_cache and seq.shape[1] <= bs:
                out = self.logits(seq[:, seen:], cache=cache, start_pos=seen, last_only=True)
                seen = seq.shape[1]
            else:  # no cache, or learned positions past block_size (every position shifts: the cache is stale)
                cache.clear()  # (only frees memory: this branch never reads the cache)
                out = self.logits(seq[:, -window:], last_only=True)
            return out[:, -1]

        return step

    def rows_decoder(self, prompts: list[list[int]]) -> RowsStep:
        """Prompts of different lengths in one KV cache: left-padded, each row with its own positions
        and its padding masked. With learned positions a row longer than block_size leaves the cache for
        good and, as in `decoder`, has its last block_size tokens recomputed each step (such rows batch
        together); with rotary ones every row stays in the cache."""
        bs = self.cache_limit
        dev, b, window = self.device, len(prompts), self.context_tokens
        rows = [list(p) for p in prompts]
        cached = [len(r) <= bs for r in rows]
        cache: list[dict] = [{} for _ in self.blocks]
        width = max([len(r) for r, c in zip(rows, cached) if c] or [1])
        ids = torch.zeros(b, width, dtype=torch.long)
        pos = torch.zeros(b, width, dtype=torch.long)
        pad = torch.ones(b, width, dtype=torch.bool)
        for i, r in enumerate(rows):
            if cached[i]:
                ids[i, width - len(r):], pos[i, width - len(r):] = torch.tensor(r), torch.arange(len(r))
                pad[i, width - len(r):] = False
        pad = pad.to(dev)  # True at padding keys: a column per key in the cache, and one more per step
        live = [True] * b

        def step(tokens: list[int | None] | None) -> torch.Tensor:
            nonlocal pad
            if tokens is not None:
                for i, (r, tok) in enumerate(zip(rows, tokens)):
                    live[i] = live[i] and tok is not None
                    r.append(PAD if tok is None else tok)
                    cached[i] = cached[i] and len(r) <= bs
                tokens = [r[-1] for r in rows]  # PAD for ended rows
            out = torch.zeros(b, self.config.vocab_size, device=dev)
            if any(c and a for c, a in zip(cached, live)):  # all rows step together, keeping the cache aligned
                if tokens is None:
                    x, p = ids.to(dev), pos.to(dev)
                else:
                    pad = torch.cat([pad, torch.zeros(b, 1, dtype=torch.bool, device=dev)], 1)
                    x = torch.tensor(tokens, device=dev)[:, None]
                    p = torch.tensor([min(len(r), bs) - 1 for r in rows], device=dev)[:, None]
                out = self.logits(x, cache=cache, positions=p, pad_mask=pad, last_only=True)[:, -1]
                pad = pad[:, pad.shape[1] - cache[0]["k"].shape[2]:]  # the keys a sliding window kept
            recompute = [i for i in range(b) if not cached[i] and live[i]]
            if recompute:
                out[recompute] = self.logits(torch.tensor([rows[i][-window:] for i in recompute], device=dev),
                                             last_only=True)[:, -1].to(out.dtype)
            return out

        return step

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """step.onnx: ids (batch, length) int64, 1 <= length <= context_tokens -> logits (batch, vocab) of the
        last position. No KV cache in the graph: each step re-reads its whole window (a cache would make the
        graph take and return every layer's keys and values)."""
        c = self.config

        def example(b: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
            return (torch.randint(c.vocab_size, (b, length), generator=g),)
        return [Graph("step", _GPTStep(self), [("ids", "int64", [BATCH, "length"])],
                      [("logits", "float32", [BATCH, c.vocab_size])], example,
                      lengths_upto(self.context_tokens, 2))]

    def onnx_extras(self) -> dict:
        n = self.context_tokens
        return {"text": {"block_size": self.config.block_size, "context_tokens": n, "positions": self.config.pos,
                         "kv_cache": False,
                         "note": f"feed the last {n} tokens (context_tokens) each step; logits are for the next token"}}


class _GPTStep(nn.Module):
    """The exported network: a window of ids -> the next token's logits."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.logits(ids, last_only=True)[:, -1]
