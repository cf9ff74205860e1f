"""The denoising U-Net of DDPM (Ho et al. 2020, appendix B; PixelCNN++-style residual blocks).

The network only: it maps a noisy image x_t, its timestep t and an optional class label y to a
tensor of x_t's shape (the noise eps or the velocity v, as the diffusion process asks). The
process (schedules, q_sample, the DDPM/DDIM samplers) lives in diffusion.py (docs/design.md
principle 3: models vs schedulers, as in diffusers).

Layout, for channel_mults (1, 2, 2) on 32x32:
    conv_in -> [res x num_res_blocks (+attn), down] 32 -> 16 -> 8 -> middle (res, attn, res)
            -> [res x (num_res_blocks + 1) (+attn), up] 8 -> 16 -> 32 -> norm, SiLU, conv_out
Each up-path block concatenates one skip from the down path. A level halves the map only while
the size is even and above 4 (layers.n_downsamples' rule), so 28x28 runs 28 -> 14 -> 7 and 8x8
runs 8 -> 4; a level that cannot halve keeps its resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UsageError
from genlab.models.layers import norm


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017, as in DDPM): (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the last layer of a residual branch so every block starts as the identity (guided-diffusion)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def add_into(h: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """h + other, written into h (a map the caller made) when that keeps the sum's dtype: under autocast a bf16 map
    plus a float32 residual stays float32, as out of place."""
    return h.add_(other) if torch.promote_types(h.dtype, other.dtype) == h.dtype else h + other


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + projected (time, label) embedding, GroupNorm-SiLU-dropout-conv, + skip.
    emb_dim 0: no embedding (latent_diffusion.py's autoencoder)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch) if emb_dim else None
        self.norm2, self.drop = norm(out_ch), nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        # In place on maps this block made, never on x: the additions always (a convolution's backward does not read
        # its output), SiLU when sampling (no autograd). Sampling's forward was 1.06x faster (benchmarks/RESULTS.md).
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        if self.emb_proj is not None:
            h = add_into(h, self.emb_proj(F.silu(emb))[:, :, None, None])  # (N, out_ch, 1, 1): a shift per channel
        h = self.conv2(self.drop(F.silu(self.norm2(h), inplace=inplace)))
        return add_into(h, self.skip(x))


class AttnBlock(nn.Module):
    """Multi-head self-attention over the H*W positions (heads of 32 channels where they divide)."""

    def __init__(self, ch: int):
        super().__init__()
        self.heads = ch // 32 if ch % 32 == 0 else 1
        self.norm = norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (N, heads, HW, c / heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Stride-2 conv; the identity at a level that cannot halve (it still hands a skip to the up path)."""

    def __init__(self, ch: int, halve: bool):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if halve else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv (avoids the checkerboard of transposed convs)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TemporalConv(nn.Module):
    """Mixes each pixel's features across the frames of its clip: GroupNorm-SiLU-Conv1d (kernel 3) over time,
    zero-initialised and residual, so a new layer starts as the identity. Causal: the window ends at the frame."""

    def __init__(self, ch: int, frames: int, causal: bool):
        super().__init__()
        self.frames, self.causal = frames, causal
        self.norm = norm(ch)
        self.conv = zero_init(nn.Conv1d(ch, ch, 3, padding=0 if causal else 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        bf, c, h, w = x.shape   # (B * F, C, H, W), the frames of a clip consecutive
        y = F.silu(self.norm(x)).reshape(bf // self.frames, self.frames, c, h, w).permute(0, 3, 4, 2, 1)
        y = y.reshape(-1, c, self.frames)                                        # (B * H * W, C, F)
        y = self.conv(F.pad(y, (2, 0)) if self.causal else y)
        return x + y.reshape(bf // self.frames, h, w, c, self.frames).permute(0, 4, 3, 1, 2).reshape(bf, c, h, w)


class TemporalAttn(nn.Module):
    """Self-attention across the frames of a clip at each spatial position (Ho et al. 2022, "Video Diffusion
    Models": factorised space-time attention), with a learned embedding of the frame index; zero-initialised."""

    def __init__(self, ch: int, frames: int, causal: bool):
        super().__init__()
        self.frames, self.causal = frames, causal
        self.heads = ch // 32 if ch % 32 == 0 else 1
        self.norm = norm(ch)
        self.pos = nn.Parameter(torch.randn(frames, ch) * 0.02)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = zero_init(nn.Linear(ch, ch))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        bf, c, h, w = x.shape
        b, f, heads = bf // self.frames, self.frames, self.heads
        y = self.norm(x).reshape(b, f, c, h, w).permute(0, 3, 4, 1, 2).reshape(-1, f, c) + self.pos   # (BHW, F, C)
        q, k, v = self.qkv(y).reshape(-1, f, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).transpose(1, 2).reshape(-1, f, c)
        return x + self.proj(out).reshape(b, h, w, f, c).permute(0, 3, 4, 1, 2).reshape(bf, c, h, w)


class UNet(nn.Module):
    """eps_theta(x_t, t, y): (N, C, H, W), (N,) timesteps, optional (N,) labels -> (N, C, H, W).

    With num_classes > 0 the label embedding table has num_classes + 1 rows; row `num_classes` is
    the "null" label of classifier-free guidance (Ho & Salimans 2022), used when y is None.
    attn_resolutions lists the map sizes (e.g. [8]) that get self-attention after each res block;
    the middle block always has attention. Sizes that never occur are ignored, so one preset fits
    several image sizes.

    Video (frames > 0): the space-time U-Net of Ho et al. 2022. The same blocks run on every frame as an image
    (the clip's frames are a batch of images), and after each ResBlock a TemporalConv, after each AttnBlock a
    TemporalAttn mix across the frames; x is then (N, frames, C + extra_in, H, W) and the output (N, frames, C, H,
    W). extra_in: input channels beyond C that condition the prediction (the video model's known frames); the
    output has in_channels channels. causal: the temporal layers see only the frames up to their own.
    """

    def __init__(self, in_channels: int, image_size: int, width: int = 32, channel_mults: list[int] = (1, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions: list[int] = (8,), dropout: float = 0.0,
                 num_classes: int = 0, frames: int = 0, extra_in: int = 0, causal: bool = False):
        super().__init__()
        if not channel_mults or min(channel_mults) < 1 or num_res_blocks < 1 or width < 1:
            raise UsageError(f"U-Net needs width >= 1, num_res_blocks >= 1 and positive channel_mults; got "
                             f"width={width}, num_res_blocks={num_res_blocks}, channel_mults={list(channel_mults)}")
        for ch in {width * m for m in channel_mults}:
            if ch % min(8, ch):
                raise UsageError(f"U-Net level width {ch} (model.width={width} x channel_mult) is not divisible by "
                                 f"GroupNorm's {min(8, ch)} groups; use a width that is a multiple of 8")
        self.num_classes, self.frames = num_classes, frames

        def mixing(ch: int, attention: bool) -> list[nn.Module]:   # a video U-Net's temporal layer after a block
            return [(TemporalAttn if attention else TemporalConv)(ch, frames, causal)] if frames else []

        emb_dim = 4 * width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels + extra_in, width, 3, padding=1)

        # Down path: every module pushes its output as a skip; `skips` tracks their channels.
        res, ch, skips, halved = image_size, width, [width], []
        self.resolutions = [res]  # map size at each level, e.g. [28, 14, 7]
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                blocks = [ResBlock(ch, width * mult, emb_dim, dropout), *mixing(width * mult, False)]
                ch = width * mult
                if res in attn_resolutions:
                    blocks += [AttnBlock(ch), *mixing(ch, True)]
                self.down.append(nn.ModuleList(blocks))
                skips.append(ch)
            if level < len(channel_mults) - 1:
                halved.append(res % 2 == 0 and res > 4)
                self.down.append(nn.ModuleList([Downsample(ch, halved[-1])]))
                skips.append(ch)
                res = res // 2 if halved[-1] else res
                self.resolutions.append(res)

        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), *mixing(ch, False), AttnBlock(ch),
                                     *mixing(ch, True), ResBlock(ch, ch, emb_dim, dropout), *mixing(ch, False)])

        # Up path: num_res_blocks + 1 blocks per level, each eating one skip; upsample where we halved.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for i in range(num_res_blocks + 1):
                blocks = [ResBlock(ch + skips.pop(), width * mult, emb_dim, dropout), *mixing(width * mult, False)]
                ch = width * mult
                if res in attn_resolutions:
                    blocks += [AttnBlock(ch), *mixing(ch, True)]
                if level > 0 and i == num_res_blocks and halved[level - 1]:
                    blocks.append(Upsample(ch))
                    res *= 2
                self.up.append(nn.ModuleList(blocks))
        assert not skips and res == image_size, "U-Net skip bookkeeping is inconsistent"

        self.out = nn.Sequential(norm(ch), nn.SiLU(), zero_init(nn.Conv2d(ch, in_channels, 3, padding=1)))
        # Channels-last (NHWC) weights and activations: oneDNN's convolutions and PyTorch's GroupNorm run faster in
        # that layout on a CPU (benchmarks/unet_speed.py). Only the layout in memory changes: the same numbers, saved
        # as usual (runs.py writes contiguous tensors), and inputs and outputs stay (N, C, H, W).
        self.channels_last = True
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.time_mlp[0].in_features))  # (N, 4 * width)
        if self.label_emb is not None:
            if y is None:  # unconditional prediction: the null label
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_emb(y)
        elif y is not None:
            raise UsageError("this U-Net was built without classes (num_classes=0); pass y=None")
        if self.frames:   # a clip's frames are a batch of images sharing the clip's embedding
            n, f = x.shape[:2]
            x, emb = x.flatten(0, 1), emb.repeat_interleave(f, 0)
        h = self.conv_in(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)
        hs = [h]
        for blocks in self.down:
            for block in blocks:
                h = block(h, emb)
            hs.append(h)
        for block in self.middle:
            h = block(h, emb)
        for blocks in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
        out = self.out(h).contiguous()
        return out.reshape(n, f, *out.shape[1:]) if self.frames else out
