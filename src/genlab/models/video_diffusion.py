"""`video-ddpm`: the DDPM family (diffusion.py: its process, DDPM / DDIM / DPM-Solver++ samplers, classifier-free
guidance, `plan`, CONTROLS) on clips, with the factorised space-time U-Net of Ho et al. 2022 ("Video Diffusion
Models"): unet.UNet with `frames`, so the image U-Net's ResBlocks, attention and resampling run on every frame and
a temporal convolution after each ResBlock and a temporal attention after each attention block mix the frames.

A clip is (F, C, H, W) in [-1, 1]; batches are {"x": (B, F, C, H, W), "y": (B,) labels}.

Frame conditioning (video prediction) is a control of the same network, as in masked video diffusion (Voleti et
al. 2022, MCVD; Höppe et al. 2022): the U-Net's input has C + 1 more channels per frame, the known frames' pixels
and a mask that is 1 on them. In training a clip gets, with probability p_context, its first k frames as known
(k uniform in 1..F-1) and the loss counts only the frames it must generate; otherwise the mask is 0 and the model
generates the whole clip. `sample(..., context=frames)` continues k given frames (the returned clip holds them
exactly, then the generated rest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from genlab.errors import ControlError, UsageError
from genlab.models.base import NoiseParts, as_labels
from genlab.models.diffusion import DDPM
from genlab.models.unet import UNet


@dataclass
class VideoDDPMConfig:
    family: str = "video-ddpm"
    in_channels: int = 3      # set from the data
    image_size: int = 32      # set from the data: frames are square
    frames: int = 16          # set from the data: frames per clip (F)
    fps: float = 8.0          # set from the data: the frame rate samples are played at
    num_classes: int = 0      # set from the data when training with --conditional; 0 = unconditional
    width: int = 32           # U-Net channels at full resolution; multiple of 8
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    attn_resolutions: list[int] = field(default_factory=lambda: [8])     # map sizes with spatial + temporal attention
    dropout: float = 0.0
    causal: bool = False      # temporal layers see only earlier frames (then frame t never depends on frame t + 1)
    p_context: float = 0.5    # share of training clips whose first k frames are given (video prediction)
    timesteps: int = 1000
    schedule: str = "cosine"
    prediction: str = "v"
    p_uncond: float = 0.1


SAMPLE_CHUNK = 8   # clips per U-Net call when sampling (VideoDDPM.denoiser)

# Sized for 16 frames of 32x32 on CPU (benchmarks/video_throughput.py measures them).
PRESETS = {
    "tiny": {"model.width": 16, "model.channel_mults": [1, 2, 2], "model.num_res_blocks": 1,
             "model.attn_resolutions": [8], "train.lr": 1e-3, "train.batch_size": 8, "train.steps": 1500,
             "train.warmup_steps": 100, "train.ema": 0.995},
    "small": {"model.width": 32, "model.channel_mults": [1, 2, 2], "model.num_res_blocks": 1,
              "model.attn_resolutions": [8], "train.lr": 5e-4, "train.batch_size": 8, "train.steps": 6000,
              "train.warmup_steps": 200, "train.ema": 0.999},
    "base": {"model.width": 64, "model.channel_mults": [1, 2, 2, 2], "model.num_res_blocks": 2,
             "model.attn_resolutions": [16, 8], "model.dropout": 0.1, "train.lr": 2e-4,
             "train.batch_size": 16, "train.steps": 30000, "train.warmup_steps": 500, "train.ema": 0.999},
}


class VideoDDPM(DDPM):
    """DDPM on clips (B, F, C, H, W) with a space-time U-Net; optionally continues given first frames."""

    family = "video-ddpm"
    CAPABILITIES = frozenset({"predict"})   # sample(context=): continue the first frames of a clip

    def __init__(self, config: VideoDDPMConfig):
        c = config
        if c.frames < 2:
            raise UsageError(f"video-ddpm needs clips of at least 2 frames; got frames={c.frames}")
        if not 0 <= c.p_context < 1:
            raise UsageError(f"model.p_context={c.p_context}; expected a probability in [0, 1)")
        super().__init__(config)

    @staticmethod
    def build_unet(c) -> UNet:
        """The space-time U-Net: the image U-Net's blocks on every frame, temporal layers between them, and C + 1
        conditioning channels in (the known frames and their mask)."""
        return UNet(c.in_channels, c.image_size, c.width, c.channel_mults, c.num_res_blocks, c.attn_resolutions,
                    c.dropout, c.num_classes, frames=c.frames, extra_in=c.in_channels + 1, causal=c.causal)

    def item_shape(self) -> tuple[int, ...]:
        c = self.config
        return (c.frames, c.in_channels, c.image_size, c.image_size)

    def unet_input_shape(self) -> tuple[int, ...]:
        c = self.config
        return (c.frames, 2 * c.in_channels + 1, c.image_size, c.image_size)

    def known(self, clips: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The conditioning channels (B, F, C + 1, H, W): the first k[b] frames of clip b and a mask of them."""
        b, f = clips.shape[:2]
        mask = (torch.arange(f, device=clips.device)[None] < k[:, None]).to(clips.dtype)[:, :, None, None, None]
        return torch.cat([clips * mask, mask.expand(-1, -1, 1, *clips.shape[3:])], 2)

    def loss(self, batch: dict) -> dict:
        """L_simple over the frames the model must generate: each clip's first k frames are given with probability
        p_context (k uniform in 1..F-1), otherwise none."""
        x = batch["x"]
        c = self.config
        if x.ndim != 5 or tuple(x.shape[1:]) != self.item_shape():
            raise UsageError(f"video-ddpm expects clips (B, {', '.join(map(str, self.item_shape()))}); got "
                             f"{tuple(x.shape)}")
        y = batch.get("y") if c.num_classes > 0 else None
        if c.num_classes > 0:
            if y is None:
                raise UsageError("this video-ddpm is class-conditional (num_classes > 0) but the batch has no labels")
            if self.training:
                y = self.drop_labels(y)
        n = x.shape[0]
        k = torch.randint(1, c.frames, (n,), device=x.device)
        k = torch.where(torch.rand(n, device=x.device) < c.p_context, k, torch.zeros_like(k))
        cond = self.known(x, k)
        t = torch.randint(0, self.diffusion.num_timesteps, (n,), device=x.device)
        noise = torch.randn_like(x)
        x_t = self.diffusion.q_sample(x, t, noise)
        err = (self.unet(torch.cat([x_t, cond], 2), t, y).float()
               - self.diffusion.training_target(x, t, noise).float()) ** 2
        weight = 1 - cond[:, :, -1:].float()                                     # the frames to generate
        mse = (err * weight).sum() / (weight.sum() * err.shape[2]).clamp_min(1)
        return {"loss": mse, "mse": mse.detach()}

    def denoiser(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The U-Net on at most SAMPLE_CHUNK clips at a time: on CPU a batch of 32 clips (512 frames) runs at half
        the clips/s of 8 (benchmarks/RESULTS.md, "Video"), as its activations leave the caches."""
        if len(x_t) <= SAMPLE_CHUNK:
            return self.unet(x_t, t, y)
        return torch.cat([self.unet(x_t[i:i + SAMPLE_CHUNK], t[i:i + SAMPLE_CHUNK],
                                    None if y is None else y[i:i + SAMPLE_CHUNK])
                          for i in range(0, len(x_t), SAMPLE_CHUNK)])

    def context_tensor(self, context, n: int) -> torch.Tensor:
        """Given first frames (k, C, H, W) for every clip, or (n, k, C, H, W) one set per clip, in [-1, 1], as
        (n, k, C, H, W) on the model's device; 1 <= k < frames."""
        c = self.config
        ctx = torch.as_tensor(context, dtype=torch.float32, device=self.device)
        if ctx.ndim == 4:
            ctx = ctx.expand(n, *ctx.shape)
        want = (c.in_channels, c.image_size, c.image_size)
        if ctx.ndim != 5 or ctx.shape[0] != n or tuple(ctx.shape[2:]) != want:
            raise ControlError("context", f"context frames of shape {tuple(ctx.shape)}; expected (k, {', '.join(map(str, want))}) "
                                          f"or ({n}, k, {', '.join(map(str, want))})")
        if not 1 <= ctx.shape[1] < c.frames:
            raise ControlError("context", f"{ctx.shape[1]} context frames; expected 1 to {c.frames - 1} (the model "
                                          f"makes clips of {c.frames} frames)")
        if not torch.isfinite(ctx).all() or ctx.abs().max() > 1:
            raise ControlError("context", "context frames must be finite values in [-1, 1]")
        return ctx

    @torch.no_grad()
    def sample(self, n: int, *, cond=None, generator: torch.Generator | NoiseParts | None = None,
               steps: int | None = None, sampler: str = "ddim", eta: float = 0.0, guidance: float = 1.0,
               progress: bool = False, x_T: torch.Tensor | None = None,
               on_step: Callable[[int], None] | None = None, context=None) -> torch.Tensor:
        """n clips (n, F, C, H, W) in [-1, 1], with DDPM.sample's controls. context: the first k frames to
        continue ((k, C, H, W) for all, or (n, k, C, H, W)); the clips start with them exactly."""
        plan = self.plan(steps=steps, sampler=sampler, eta=eta, guidance=guidance, labelled=cond is not None)
        y = as_labels(cond, n, self.config.num_classes, self.device)
        ctx = None if context is None else self.context_tensor(context, n)
        full = torch.zeros(n, *self.item_shape(), device=self.device)
        if ctx is not None:
            full[:, :ctx.shape[1]] = ctx
        k = torch.full((n,), 0 if ctx is None else ctx.shape[1], device=self.device)
        known = self.known(full, k)
        model_fn = lambda x, t: self.guided_output(torch.cat([x, known], 2), t, y, plan["guidance"])  # noqa: E731
        clips = self.run_sampler(plan, model_fn, n, generator=generator, x_T=x_T, progress=progress, on_step=on_step)
        if ctx is not None:
            clips[:, :ctx.shape[1]] = ctx
        return clips

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_T (N, F, C, H, W) -> clips by deterministic DDIM (50 steps, eta = 0), no frames given."""
        return self.sample(len(z), cond=y, x_T=z, steps=min(50, self.diffusion.num_timesteps))

    def onnx_extras(self) -> dict:
        """DDPM's diffusion process, and the conditioning channels a consumer appends to x_t."""
        c = self.config
        return {**super().onnx_extras(),
                "video": {"frames": c.frames, "input": f"x_t (batch, {c.frames}, {c.in_channels}, H, W) "
                          f"concatenated on axis 2 with the known frames ({c.in_channels} channels, zero where "
                          "unknown) and their mask (1 channel, 1 on known frames); all zeros: no frames given"}}
