"""Layers shared by more than one family (docs/design.md: only what two families really use)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UsageError


def n_downsamples(image_size: int, smallest: int = 4) -> int:
    """How many stride-2 halvings take `image_size` down to `smallest` (stopping at an odd size)."""
    n, s = 0, image_size
    while s % 2 == 0 and s > smallest:
        s //= 2
        n += 1
    return n


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups: batch-size independent, so train and eval behave alike."""
    return nn.GroupNorm(min(8, channels), channels)


class ConvEncoder(nn.Module):
    """(N, C, H, W) -> (N, width * 2**k, H / 2**k, W / 2**k), halving until the map is 4x4 (or odd)."""

    def __init__(self, in_channels: int, image_size: int, width: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), norm(width), nn.SiLU()]
        c = width
        for _ in range(n_downsamples(image_size)):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), norm(2 * c), nn.SiLU(),
                       nn.Conv2d(2 * c, 2 * c, 3, padding=1), norm(2 * c), nn.SiLU()]
            c *= 2
        self.net = nn.Sequential(*layers)
        self.out_channels = c
        self.out_size = image_size // 2 ** n_downsamples(image_size)

    @property
    def out_features(self) -> int:
        return self.out_channels * self.out_size ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: a vector (N, in_features) -> image logits (N, out_channels, H, W).

    With `cond_dim` > 0, `forward(h, cond)` also modulates every normalised feature map by the condition
    vector (FiLM, Perez et al. 2018: x * (1 + scale(cond)) + shift(cond), per channel), so that the condition
    reaches every resolution instead of only the input."""

    def __init__(self, in_features: int, out_channels: int, image_size: int, width: int, cond_dim: int = 0):
        super().__init__()
        k = n_downsamples(image_size)
        c = width * 2 ** k
        self.start = (c, image_size // 2 ** k)
        self.fc = nn.Linear(in_features, c * self.start[1] ** 2)
        layers: list[nn.Module] = [norm(c), nn.SiLU()]
        for _ in range(k):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c // 2, 3, padding=1),
                       norm(c // 2), nn.SiLU(), nn.Conv2d(c // 2, c // 2, 3, padding=1), norm(c // 2), nn.SiLU()]
            c //= 2
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        norms = [m for m in layers if isinstance(m, nn.GroupNorm)]
        self.film = nn.ModuleList(nn.Linear(cond_dim, 2 * m.num_channels) for m in norms) if cond_dim else None
        if self.film is not None:
            for f in self.film:  # start as the identity: the condition's effect is learnt
                nn.init.zeros_(f.weight)
                nn.init.zeros_(f.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        c, s = self.start
        x = self.fc(h).view(-1, c, s, s)
        if self.film is None:
            return self.net(x)
        films = iter(self.film)
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.GroupNorm):
                scale, shift = next(films)(cond)[:, :, None, None].chunk(2, dim=1)
                x = x * (1 + scale) + shift
        return x


# ---- Transformer layers (gpt, seq2seq, textclf) -------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention (Vaswani et al. 2017) over `torch.nn.functional.scaled_dot_product_attention`.

    Self-attention when `context` is None, cross-attention otherwise. `causal` masks future positions;
    `pad_mask` (B, S) is True at padding keys. `cache` (a dict) holds, for incremental decoding, the
    keys and values of earlier positions (self-attention: "k", "v", extended each call) or of the
    context (cross-attention: "ck", "cv", computed once, since the context is fixed). With
    `need_weights` the attention weights (B, heads, T, S) are computed explicitly and returned (SDPA
    does not expose them).

    `rope` (from `rope_angles`) rotates queries and keys by their positions (RoPE), so scores
    depend on relative positions only. `window` (with `causal`): a query sees at most the `window` latest
    keys, itself included (sliding-window attention); the cache then keeps only the last window - 1 keys,
    which is all any later query can see.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_head:
            raise UsageError(f"d_model={d_model} must be divisible by n_head={n_head}")
        self.n_head, self.dropout = n_head, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H), rotated by `rope` first (in the (B, T, H, D/H) layout, where each head's
        channel pairs sit next to each other in memory)."""
        b, t, d = x.shape
        x = x.view(b, t, self.n_head, d // self.n_head)
        return (x if rope is None else apply_rope(x, rope)).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *, causal: bool = False,
                pad_mask: torch.Tensor | None = None, cache: dict | None = None, need_weights: bool = False,
                rope: torch.Tensor | None = None, window: int | None = None):
        q = self._heads(self.q(x), rope)
        if context is not None and cache is not None and "ck" in cache:  # the context does not change
            k, v = cache["ck"], cache["cv"]
        else:
            k, v = self.kv(x if context is None else context).chunk(2, dim=-1)
            k, v = self._heads(k, rope), self._heads(v)
        if cache is not None and context is not None:
            cache["ck"], cache["cv"] = k, v
        elif cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            kept = k.shape[2] if window is None else min(k.shape[2], window - 1)
            cache["k"], cache["v"] = k[:, :, k.shape[2] - kept:], v[:, :, k.shape[2] - kept:]
        t, s = q.shape[2], k.shape[2]
        # SDPA's fused causal kernel where the plain causal mask is all there is (training windows, a prompt)
        # (not while tracing for ONNX: the traced shapes would fix the choice; the mask holds for every length)
        fused_causal = bool(not torch.jit.is_tracing() and causal and pad_mask is None and t == s
                            and (window is None or t <= window) and not need_weights)
        mask = None  # boolean, True = may attend; shape broadcastable to (B, H, T, S)
        if causal and not fused_causal:  # query i sits at key column s - t + i and sees keys up to it
            mask = attention_band(t, s, window, x.device)
        if pad_mask is not None:
            keep = ~pad_mask[:, None, None, :]
            if mask is None:
                mask = keep
            else:  # a padding query still sees its own key, so no row of the mask is empty (NaN in SDPA)
                own = attention_band(t, s, 1, x.device)   # a window of one: each query's own key
                mask = (mask & keep) | own
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(-1)
            out = weights @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=fused_causal,
                                                 dropout_p=self.dropout if self.training else 0.0)
        b, h, t, dh = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, t, h * dh)), weights


def attention_band(t: int, s: int, window: int | None, device: torch.device) -> torch.Tensor:
    """(t, s) bool, True where query i (at key column s - t + i) may see key j: j <= its column and, with a
    window, j > its column - window."""
    lag = torch.arange(t, device=device)[:, None] + (s - t) - torch.arange(s, device=device)[None, :]
    return (lag >= 0) if window is None else (lag >= 0) & (lag < window)


def rope_angles(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021, RoFormer): positions (T,) or (B, T) -> (cos, sin) of the angle
    position * base**(-2j / head_dim) of each channel pair j, (T, 1, head_dim / 2, 2) or (B, T, 1, head_dim / 2,
    2) (the 1 broadcasts over heads; the last axis is a complex number's real and imaginary part), for
    `apply_rope`."""
    if head_dim % 2:
        raise UsageError(f"rotary positions need an even head width; got d_model / n_head = {head_dim}")
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = (positions.float()[..., None] * inv_freq).unsqueeze(-2)     # (..., T, 1, head_dim / 2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (x[2j], x[2j+1]) of x (B, T, H, head_dim) by its position's angle for pair j,
    so that q . k depends on the positions' difference only. As one complex product (the fastest form on a
    CPU); written out in reals while tracing for ONNX, which has no complex numbers."""
    pairs = x.float().unflatten(-1, (-1, 2))                               # (B, T, H, head_dim / 2, 2)
    if torch.jit.is_tracing():
        (x1, x2), (c, s) = pairs.unbind(-1), rot.unbind(-1)
        out = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)
    else:
        out = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rot))
    return out.flatten(-2).to(x.dtype)


class Block(nn.Module):
    """Pre-norm Transformer block: self-attention, optional cross-attention, then an MLP (GELU)."""

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, cross: bool = False, d_ff: int = 0):
        super().__init__()
        d_ff = d_ff or 4 * d_model  # the MLP's hidden width (narrower after structured pruning, genlab.compress)
        self.ln1, self.attn = nn.LayerNorm(d_model), Attention(d_model, n_head, dropout)
        self.cross = Attention(d_model, n_head, dropout) if cross else None
        self.ln_cross = nn.LayerNorm(d_model) if cross else None
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, causal: bool = False, pad_mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_pad_mask: torch.Tensor | None = None,
                cache: dict | None = None, rope: torch.Tensor | None = None,
                window: int | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), causal=causal, pad_mask=pad_mask, cache=cache, rope=rope,
                                    window=window)[0])
        if self.cross is not None:
            x = x + self.drop(self.cross(self.ln_cross(x), context, pad_mask=context_pad_mask, cache=cache)[0])
        return x + self.mlp(self.ln2(x))
