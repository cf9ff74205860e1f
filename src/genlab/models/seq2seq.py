"""Encoder-decoder Transformer for translation (`seq2seq`, Vaswani et al. 2017, "Attention is all you need").

Source and target share one tokenizer, so they share one token embedding, which is also the output
layer (weight tying, Press & Wolf 2017; Vaswani et al. section 3.4). Embeddings are initialised with
std d_model^-1/2 and multiplied by sqrt(d_model) on input, so tokens and the fixed sinusoidal position
encodings (section 3.5) both have unit scale and the tied output logits start with unit scale.
Sinusoidal rather than learned positions: no parameters, and the same table for both sides.

Blocks are the pre-norm `layers.Block`: the encoder uses non-causal self-attention that ignores
source padding; the decoder uses causal self-attention (with a key/value cache for generation) and
cross-attention to the encoder output.

Decoding: greedy and temperature/top-k/top-p sampling go through `sampling.sample_next`; beam search
(batched over sources and beams) ranks finished hypotheses by log P(y|x) / lp(y) with the GNMT length
penalty lp = ((5 + |y|) / 6)^alpha (Wu et al. 2016), |y| counting the generated tokens including <eos>.
The generation distribution never proposes <pad> or <bos> (their logits are set to -inf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.tokenizers import BOS, EOS, PAD
from genlab.errors import UnsupportedError, UsageError
from genlab.models.base import GenerativeModel
from genlab.models.controls import Control, by_name, check
from genlab.models.layers import Block
from genlab.models.sampling import DECODING, sample_next


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """(n, d) table: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d))."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)[:, : d // 2]
    return pe


def gnmt_length_penalty(length: torch.Tensor | int, alpha: float) -> torch.Tensor:
    """GNMT length penalty lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016, eq. 14); alpha = 0 gives 1."""
    return ((5.0 + torch.as_tensor(length, dtype=torch.float32)) / 6.0) ** alpha


@dataclass
class Seq2SeqConfig:
    family: str = "seq2seq"
    vocab_size: int = 128          # set from the data (one tokenizer for source and target)
    max_len: int = 64              # max positions on each side: source tokens, and target tokens incl. <bos>
    n_layer: int = 3               # layers in the encoder and again in the decoder
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.1
    d_ff: int = 0             # MLP hidden width; 0 = 4 * d_model (less after `genlab compress --structured`)
    label_smoothing: float = 0.1   # epsilon_ls of Vaswani et al. (0.1); the loss logs the unsmoothed "nll" too


PRESETS = {
    # tiny: a quarter of the FLOPs of d_model 128, so four times the steps in a CPU budget
    "tiny": {"model.n_layer": 2, "model.n_head": 4, "model.d_model": 64, "model.dropout": 0.0,
             "train.batch_size": 64, "train.steps": 3000, "train.lr": 2e-3, "train.warmup_steps": 100},
    "small": {"model.n_layer": 3, "model.n_head": 4, "model.d_model": 256, "model.dropout": 0.1,
              "train.batch_size": 64, "train.steps": 6000, "train.lr": 5e-4, "train.warmup_steps": 400},
    # the paper's base model: 6 + 6 layers, d_model 512, 8 heads, MLP 2048
    "base": {"model.n_layer": 6, "model.n_head": 8, "model.d_model": 512, "model.dropout": 0.1,
             "train.batch_size": 128, "train.steps": 30000, "train.lr": 3e-4, "train.warmup_steps": 4000},
}


class Seq2Seq(GenerativeModel):
    """Transformer translation model. Batches: {"src": (B, S), "tgt": (B, T)} (see `loss`)."""

    family = "seq2seq"
    ADAPTER_TARGETS = (nn.Linear,)
    CONTROLS = (Control("beam", int, 1, 1, 16, help="beam width, 1 = greedy"),
                Control("length_penalty", float, 1.0, 0.0, 5.0, help="GNMT alpha, 0 = none"),
                Control("max_new_tokens", int, None, 1, None, help="tokens to generate, default max_len - 1"))

    def __init__(self, config: Seq2SeqConfig):
        c = config
        if c.vocab_size <= EOS:
            raise UsageError(f"vocab_size={c.vocab_size}; the tokenizer reserves ids 0..3, so expected > 3")
        if c.max_len < 2:
            raise UsageError(f"max_len={c.max_len}; expected >= 2 (<bos> plus one token)")
        if not 0 <= c.label_smoothing < 1:
            raise UsageError(f"label_smoothing={c.label_smoothing}; expected a value in [0, 1)")
        super().__init__(config)
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        nn.init.normal_(self.tok_emb.weight, std=c.d_model ** -0.5)
        self.register_buffer("pe", sinusoidal_positions(c.max_len, c.d_model), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(Block(c.d_model, c.n_head, c.dropout, d_ff=c.d_ff) for _ in range(c.n_layer))
        self.decoder = nn.ModuleList(Block(c.d_model, c.n_head, c.dropout, cross=True, d_ff=c.d_ff)
                                     for _ in range(c.n_layer))
        self.ln_enc, self.ln_dec = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)

    # ---- network ---------------------------------------------------------------------------------

    def _embed(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        t = ids.shape[1]
        if start + t > self.config.max_len:
            raise UsageError(f"sequence of {start + t} positions; this model's max_len is {self.config.max_len}")
        x = self.tok_emb(ids) * math.sqrt(self.config.d_model) + self.pe[start:start + t]
        return self.drop(x)

    def encode(self, src: torch.Tensor, src_pad_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Source ids (B, S) -> (memory (B, S, D), src_pad_mask (B, S), True at padding).

        The mask defaults to `src == 0`; pass it explicitly to mark other positions as padding."""
        pad = src == PAD if src_pad_mask is None else src_pad_mask.bool()
        pad = pad & ~pad.all(1, keepdim=True)  # an all-padding row attends to everything rather than to nothing (NaN)
        x = self._embed(src)
        for block in self.encoder:
            x = block(x, pad_mask=pad)
        return self.ln_enc(x), pad

    def new_cache(self) -> list[dict]:
        """An empty decoder self-attention key/value cache (one dict per decoder layer)."""
        return [{} for _ in self.decoder]

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_pad_mask: torch.Tensor,
               cache: list[dict] | None = None) -> torch.Tensor:
        """Target ids (B, T) -> next-token logits (B, T, V). With `cache` the ids continue the cached
        prefix (positions start after it) and the cache is extended in place."""
        start = cache[0]["k"].shape[2] if cache is not None and "k" in cache[0] else 0
        x = self._embed(tgt_in, start)
        for i, block in enumerate(self.decoder):
            x = block(x, causal=True, context=memory, context_pad_mask=src_pad_mask,
                      cache=None if cache is None else cache[i])
        return F.linear(self.ln_dec(x), self.tok_emb.weight)  # tied output layer

    def decode_step(self, tokens: torch.Tensor, memory: torch.Tensor, src_pad_mask: torch.Tensor,
                    cache: list[dict]) -> torch.Tensor:
        """The newest target token per row (B,) -> logits for the one after it (B, V), extending `cache`."""
        return self.decode(tokens.view(-1, 1), memory, src_pad_mask, cache)[:, -1]

    def forward_logits(self, src: torch.Tensor, tgt_in: torch.Tensor,
                       src_pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for target inputs tgt_in (B, T) given the source (B, S)."""
        memory, pad = self.encode(src, src_pad_mask)
        return self.decode(tgt_in, memory, pad)

    def loss(self, batch: dict) -> dict:
        """Label-smoothed cross-entropy of tgt[:, 1:] given tgt[:, :-1] and src, ignoring padding."""
        src, tgt = batch["src"], batch["tgt"]
        logits = self.forward_logits(src, tgt[:, :-1]).float()
        target = tgt[:, 1:]
        flat, y = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
        loss = F.cross_entropy(flat, y, ignore_index=PAD, label_smoothing=self.config.label_smoothing)
        with torch.no_grad():
            real = target != PAD
            acc = ((logits.argmax(-1) == target) & real).sum() / real.sum().clamp(min=1)
            nll = loss.detach() if self.config.label_smoothing == 0 else F.cross_entropy(flat, y, ignore_index=PAD)
        return {"loss": loss, "token_acc": acc, "nll": nll}

    # ---- decoding --------------------------------------------------------------------------------

    @staticmethod
    def _allowed(logits: torch.Tensor) -> torch.Tensor:
        """The generation distribution's logits: never <pad> or <bos>."""
        logits = logits.float().clone()
        logits[:, PAD] = float("-inf")
        logits[:, BOS] = float("-inf")
        return logits

    def _sources(self, src) -> torch.Tensor:
        """list[int] (one sentence), list[list[int]] or LongTensor (B, S) padded with 0 -> (B, S) on
        the model's device, each row ending in <eos> (added where missing)."""
        if isinstance(src, int) or (torch.is_tensor(src) and src.dim() == 0):
            raise UsageError("a source is a list of token ids (or a LongTensor (B, S)), not a single id")
        if torch.is_tensor(src):
            rows = [r[r != PAD].tolist() for r in (src.view(1, -1) if src.dim() == 1 else src)]
        elif len(src) > 0 and all(isinstance(t, int) for t in src):
            rows = [list(src)]
        else:
            rows = [list(r) for r in src]
        if not rows:
            raise UsageError("no source sentences given")
        v, m = self.config.vocab_size, self.config.max_len
        for i, r in enumerate(rows):
            if not r or r[-1] != EOS:
                r.append(EOS)
            if len(r) > m:
                raise UsageError(f"source {i} has {len(r)} tokens with <eos>; this model's max_len is {m}")
            if min(r) < 0 or max(r) >= v:
                raise UsageError(f"source {i} has token ids outside 0..{v - 1}")
        out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out.to(self.pe.device)

    def controls(self) -> dict[str, Control]:
        """max_new_tokens up to max_len - 1: the target holds <bos> plus the generated tokens."""
        out = super().controls()
        out["max_new_tokens"] = replace(out["max_new_tokens"], max=self.config.max_len - 1)
        return out

    def _max_new(self, max_new_tokens: int | None) -> int:
        control = self.controls()["max_new_tokens"]
        control.check(max_new_tokens)
        return control.max if max_new_tokens is None else max_new_tokens

    @torch.no_grad()
    def generate(self, src: torch.Tensor, max_new_tokens: int, generator: torch.Generator | None = None, *,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, use_cache: bool = True) -> torch.Tensor:
        """Token-by-token decoding (greedy when temperature is 0). src (B, S) -> (B, 1 + t) target ids
        starting with <bos>, 0 after <eos>. `use_cache=False` re-runs the decoder on the whole prefix
        at every step (for testing the cache)."""
        memory, pad = self.encode(src)
        cache = self.new_cache() if use_cache else None
        out = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        ended = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_new_tokens):
            if use_cache:
                logits = self.decode_step(out[:, -1], memory, pad, cache)
            else:
                logits = self.decode(out, memory, pad)[:, -1]
            nxt = sample_next(self._allowed(logits), generator, temperature=temperature, top_k=top_k, top_p=top_p)
            nxt = nxt.masked_fill(ended, PAD)
            out = torch.cat([out, nxt[:, None]], dim=1)
            ended |= nxt == EOS
            if ended.all():
                break
        return out

    @torch.no_grad()
    def beam_search(self, src: torch.Tensor, beam: int, max_new_tokens: int, alpha: float = 1.0, *,
                    return_scores: bool = False):
        """Beam search, batched over sources and beams. src (B, S) -> (B, 1 + t) best hypotheses
        (and, with `return_scores`, their scores log P / lp, (B,)).

        A source has k beam slots. Each step takes the best (k - finished) candidate extensions of its
        live hypotheses by log-probability; those ending in <eos> (all of them at max_new_tokens) move
        to the finished pool, scored log P / lp, and free their slot for good: the beam shrinks as
        hypotheses finish, as in Nematus and Marian, and a source is done when every slot has finished.
        The answer is the pool's best. With k = 1 this is exactly greedy decoding.
        """
        b, k, v, n = src.shape[0], beam, self.config.vocab_size, max_new_tokens
        dev = src.device
        memory, pad = self.encode(src)
        memory, pad = memory.repeat_interleave(k, 0), pad.repeat_interleave(k, 0)
        cache = self.new_cache()
        seqs = torch.full((b * k, 1), BOS, dtype=torch.long, device=dev)       # live hypotheses
        scores = torch.full((b, k), float("-inf"), device=dev)                  # their log-probs (-inf: empty slot)
        scores[:, 0] = 0.0  # start from one beam so the first step does not pick k copies
        fin_seqs = torch.zeros(b, k, n + 1, dtype=torch.long, device=dev)      # finished pool
        fin_scores = torch.full((b, k), float("-inf"), device=dev)              # log P / lp
        fin_count = torch.zeros(b, dtype=torch.long, device=dev)
        rows = torch.arange(b, device=dev)[:, None]
        rank = torch.arange(k, device=dev)[None]
        for t in range(1, n + 1):
            logp = self._allowed(self.decode_step(seqs[:, -1], memory, pad, cache)).log_softmax(-1)
            cand = (scores.view(-1, 1) + logp).view(b, k * v)
            top, idx = cand.topk(k, dim=1)                                      # (B, k), best first
            src_beam, tok = idx // v, idx % v
            chosen = (rank < (k - fin_count)[:, None]) & torch.isfinite(top)
            finish = chosen & ((tok == EOS) | (t == n))
            live = chosen & ~finish
            # add the finished candidates to the pool (it never holds more than k)
            cand_seqs = torch.cat([seqs.view(b, k, -1)[rows, src_beam], tok[..., None]], dim=2)
            cand_seqs = F.pad(cand_seqs, (0, n + 1 - cand_seqs.shape[2]))
            cand_fin = torch.where(finish, top / gnmt_length_penalty(t, alpha), torch.full_like(top, float("-inf")))
            fin_scores, keep = torch.cat([fin_scores, cand_fin], dim=1).topk(k, dim=1)
            fin_seqs = torch.cat([fin_seqs, cand_seqs], dim=1)[rows, keep]
            fin_count += finish.sum(1)
            if not live.any():
                break
            # live candidates fill the first slots in rank order (stable sort); the rest are empty
            order = (~live).int().sort(dim=1, stable=True).indices
            scores = torch.where(live, top, torch.full_like(top, float("-inf"))).gather(1, order)
            src_beam, tok = src_beam.gather(1, order), tok.gather(1, order)
            flat = (rows * k + src_beam).view(-1)
            seqs = torch.cat([seqs[flat], tok.view(-1, 1)], dim=1)
            for layer in cache:
                layer["k"], layer["v"] = layer["k"][flat], layer["v"][flat]
        best = fin_seqs[torch.arange(b, device=dev), fin_scores.argmax(1)]
        ended = (best == EOS).cumsum(1) - (best == EOS).int() > 0  # strictly after the first <eos>
        best = best.masked_fill(ended, PAD)
        width = int((best != PAD).sum(1).max())
        return (best[:, :width], fin_scores.max(1).values) if return_scores else best[:, :width]

    @torch.no_grad()
    def sequence_logprob(self, src, tgt: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """log P(tgt | src) per row under the generation distribution, (B,). tgt (B, T) starts with
        <bos> and is padded with 0; with `alpha` the score is divided by the GNMT length penalty."""
        src = self._sources(src)
        logp = self._allowed(self.forward_logits(src, tgt[:, :-1]).flatten(0, 1)).log_softmax(-1)
        logp = logp.view(tgt.shape[0], -1, logp.shape[-1])
        target = tgt[:, 1:]
        real = target != PAD
        total = logp.gather(2, target[..., None]).squeeze(2).masked_fill(~real, 0.0).sum(1)
        if alpha is not None:
            total = total / gnmt_length_penalty(real.sum(1), alpha).to(total.device)
        return total

    @torch.no_grad()
    def translate(self, src, *, beam: int = 1, length_penalty: float = 1.0,
                  max_new_tokens: int | None = None) -> list[list[int]]:
        """Source sentence(s) -> target token ids per sentence, without <bos>/<eos>.

        `src`: list[int] (one sentence), list[list[int]] or a LongTensor (B, S) padded with 0; an
        <eos> is appended where missing. beam=1 is greedy; beam > 1 is beam search with GNMT length
        penalty exponent `length_penalty` (alpha; 0 = raw log-probability)."""
        out = self._search(self._sources(src), beam, length_penalty, self._max_new(max_new_tokens))
        return [[t for t in row[1:] if t not in (PAD, EOS)] for row in out.tolist()]

    def _search(self, src: torch.Tensor, beam: int, alpha: float, max_new: int) -> torch.Tensor:
        check(self.controls(), beam=beam, length_penalty=alpha)
        was_training = self.training
        self.eval()
        try:
            return self.generate(src, max_new) if beam == 1 else self.beam_search(src, beam, max_new, alpha)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def sample(self, n: int, *, cond=None, generator: torch.Generator | None = None, max_new_tokens: int | None = None,
               temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, beam: int = 1,
               length_penalty: float = 1.0, **controls) -> torch.Tensor:
        """n translations, (n, 1 + t) target ids starting with <bos>, 0 after <eos>.

        `cond` is the source: a list[int] shared by all n rows or a LongTensor (n, S) (padded with 0);
        None translates the empty source (<eos> alone). temperature 0 is greedy; beam > 1 is beam search
        (deterministic: temperature, top_k and top_p are then not used)."""
        if controls:
            raise UnsupportedError(f"seq2seq.sample got unknown controls {', '.join(sorted(controls))}; it takes "
                            "max_new_tokens, temperature, top_k, top_p, beam, length_penalty")
        check(by_name(DECODING), temperature=temperature, top_k=top_k, top_p=top_p)
        check(self.controls(), beam=beam, length_penalty=length_penalty)
        if cond is None:
            cond = [EOS]
        src = self._sources(cond)
        if src.shape[0] == 1:
            src = src.expand(n, -1)
        elif src.shape[0] != n:
            raise UsageError(f"cond has {src.shape[0]} source rows for n={n}; give one source or n")
        max_new = self._max_new(max_new_tokens)
        if beam > 1 or temperature == 0:
            return self._search(src, beam, length_penalty, max_new)
        was_training = self.training
        self.eval()
        try:
            return self.generate(src, max_new, generator, temperature=temperature, top_k=top_k, top_p=top_p)
        finally:
            self.train(was_training)

    # not exportable to ONNX (genlab.models.graphs): why, for the exporter's error
    ONNX_UNSUPPORTED = "an encoder-decoder with beam search: not exported yet"
