"""`ldm`: latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models").

An autoencoder maps an image (C, H, W) to a latent (latent_channels, H / f, W / f), f = 2 ** ae_halvings, and the
DDPM family (diffusion.py: its U-Net, DDIM / DPM-Solver++ / ancestral samplers, classifier-free guidance, `plan`
and CONTROLS) runs in that latent space. At f = 4 a 32x32 RGB image (3,072 numbers) becomes a 4x8x8 latent (256):
the U-Net works on maps 16 times smaller, which is where a CPU's minutes go (benchmarks/RESULTS.md, issue 14).

Two stages in one run, as Rombach et al. train them: the autoencoder first, then the diffusion on its frozen
latents. The trainer knows nothing of stages, so the family keeps them (`train_step`, two optimizer groups):
for the first `ae_steps` steps the autoencoder learns to reconstruct (L1, the loss of their first stage without its
perceptual and adversarial terms) and the diffusion already learns on its latents of the same batch, behind a
stop-gradient, so the diffusion loss never shapes the latent space; after that the autoencoder is frozen and each
step trains the U-Net alone, on latents that no longer move, at a fraction of the cost (the encoder runs forward
only, the decoder not at all). The step count lives in the model (`ae_step`, a buffer), so a resumed run and an
adapted one (genlab.adapt: its base is past the first stage) know where they are.

The latent is bounded: the encoder ends in tanh, so latents lie in (-1, 1) as pixels do, and the samplers' clipping
of the predicted x_0 to [-1, 1] (GaussianDiffusion.predict_x0_eps) is exactly the latent's range; no scale factor
is fitted to data, and a run is rebuilt from its config alone. The decoder learns on latents with a little Gaussian
noise (latent_noise), so it tolerates latents that the diffusion gets only nearly right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UsageError
from genlab.models.diffusion import DDPM, DDPMConfig
from genlab.models.graphs import BATCH, Graph, OnnxDecode, Runner
from genlab.models.layers import norm
from genlab.models.unet import ResBlock, UNet


def level_widths(width: int, halvings: int) -> list[int]:
    """The autoencoder's channels at each resolution, full size first: width, then 2 * width below it."""
    return [width * min(2 ** i, 2) for i in range(halvings + 1)]


class ChannelsLast(nn.Module):
    """A stack of layers whose weights and activations are channels-last (as the U-Net's: oneDNN's faster layout on
    a CPU); inputs and outputs stay (N, C, H, W)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last)).contiguous()


class LatentEncoder(ChannelsLast):
    """(N, C, H, W) in [-1, 1] -> (N, latent_channels, H / f, W / f) in (-1, 1): a conv, then per halving a
    stride-2 conv (after a residual block below full resolution), one more block, GroupNorm-SiLU-conv to the latent
    channels, tanh. No residual block runs at full resolution, where a block costs the most: on 32x32 shapes that
    made the autoencoder's step 1.6x faster (123 against 195 ms), for a held-out L1 after 600 steps of 0.065 against
    0.053 (one run each)."""

    def __init__(self, in_channels: int, latent_channels: int, width: int, halvings: int):
        ch = level_widths(width, halvings)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch[0], 3, padding=1)]
        for i in range(halvings):
            layers += [ResBlock(ch[i], ch[i], 0) if i else nn.SiLU(),
                       nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1)]
        layers += [ResBlock(ch[-1], ch[-1], 0), norm(ch[-1]), nn.SiLU(),
                   nn.Conv2d(ch[-1], latent_channels, 3, padding=1), nn.Tanh()]
        super().__init__(layers)


class LatentDecoder(ChannelsLast):
    """The encoder mirrored: latents -> images (N, C, H, W), unclamped (the loss sees the raw output);
    nearest-neighbour upsampling then a conv at each doubling (no checkerboard of transposed convs)."""

    def __init__(self, latent_channels: int, out_channels: int, width: int, halvings: int):
        ch = level_widths(width, halvings)
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, ch[-1], 3, padding=1), ResBlock(ch[-1], ch[-1], 0)]
        for i in reversed(range(halvings)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i + 1], ch[i], 3, padding=1)]
            layers += [ResBlock(ch[i], ch[i], 0)] if i else []
        layers += [norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], out_channels, 3, padding=1)]
        super().__init__(layers)


@dataclass
class LDMConfig(DDPMConfig):
    family: str = "ldm"
    latent_channels: int = 4    # channels of the latent (Rombach et al.'s KL-f4 autoencoder has 3; 4 as in SD)
    ae_halvings: int = 2        # the autoencoder halves the image this many times: f = 4, 32x32 -> 8x8
    ae_width: int = 32          # autoencoder channels at full resolution (twice that below it)
    latent_noise: float = 0.05  # std of the noise added to latents the decoder learns on (latents span (-1, 1))
    ae_steps: int = 1000        # steps that train the autoencoder (the first stage); frozen after them
    # the U-Net (on the latent) and the diffusion process, as in diffusion.DDPMConfig; attention at latent map sizes
    width: int = 64
    channel_mults: list[int] = field(default_factory=lambda: [1, 2])
    attn_resolutions: list[int] = field(default_factory=lambda: [4])


# Presets set model size and training length together; `--set` overrides any key afterwards.
PRESETS = {
    "tiny": {"model.ae_width": 16, "model.ae_steps": 500, "model.width": 32, "model.channel_mults": [1, 2],
             "model.num_res_blocks": 1, "model.attn_resolutions": [], "train.lr": 1e-3, "train.batch_size": 64,
             "train.steps": 1500, "train.warmup_steps": 100, "train.ema": 0.995},
    "small": {"model.ae_width": 32, "model.ae_steps": 1500, "model.width": 64, "model.channel_mults": [1, 2],
              "model.num_res_blocks": 2, "model.attn_resolutions": [4], "train.lr": 5e-4, "train.batch_size": 64,
              "train.steps": 6000, "train.warmup_steps": 200, "train.ema": 0.999},
    "base": {"model.ae_width": 64, "model.ae_steps": 5000, "model.width": 128, "model.channel_mults": [1, 2, 2],
             "model.num_res_blocks": 2, "model.attn_resolutions": [8, 4], "model.dropout": 0.1, "train.lr": 2e-4,
             "train.batch_size": 128, "train.steps": 30000, "train.warmup_steps": 500, "train.ema": 0.999},
}


def latent_side(c: LDMConfig) -> int:
    """The latent's height and width: image_size / 2 ** ae_halvings."""
    return c.image_size // 2 ** c.ae_halvings


class LDM(DDPM):
    """DDPM in an autoencoder's latent space, both trained together; images in, images out."""

    family = "ldm"
    CAPABILITIES = frozenset({"reconstruct"})
    ADAPTER_TARGETS = ()   # LoRA is not wired for it (its adapters would land in the frozen autoencoder too)

    def __init__(self, config: LDMConfig):
        c = config
        f = 2 ** c.ae_halvings if 0 <= c.ae_halvings <= 4 else 0
        if (not f or c.image_size % f or c.latent_channels < 1 or c.ae_width < 1 or c.latent_noise < 0
                or c.ae_steps < 1):
            raise UsageError(f"ldm needs 0 <= ae_halvings <= 4 with image_size divisible by 2 ** ae_halvings, and "
                             f"latent_channels >= 1, ae_width >= 1, latent_noise >= 0, ae_steps >= 1; got ae_halvings="
                             f"{c.ae_halvings}, image_size={c.image_size}, latent_channels={c.latent_channels}, "
                             f"ae_width={c.ae_width}, latent_noise={c.latent_noise}, ae_steps={c.ae_steps}")
        super().__init__(config)
        self.encoder = LatentEncoder(c.in_channels, c.latent_channels, c.ae_width, c.ae_halvings)
        self.decoder = LatentDecoder(c.latent_channels, c.in_channels, c.ae_width, c.ae_halvings)
        self.register_buffer("ae_step", torch.zeros((), dtype=torch.long))   # first-stage steps taken

    @staticmethod
    def build_unet(c) -> nn.Module:
        """DDPM's U-Net, on the latent's channels and size (attn_resolutions name latent map sizes)."""
        return UNet(c.latent_channels, latent_side(c), c.width, c.channel_mults, c.num_res_blocks,
                    c.attn_resolutions, c.dropout, c.num_classes)

    def item_shape(self) -> tuple[int, ...]:
        """What the diffusion denoises: one latent (latent_channels, H / f, W / f)."""
        c = self.config
        return (c.latent_channels, latent_side(c), latent_side(c))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> latents (N, latent_channels, H / f, W / f) in (-1, 1)."""
        return self.encoder(x)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1]."""
        return self.decoder(z).clamp(-1, 1)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images through the autoencoder alone (the label plays no part in it): the best the decoder can do."""
        return self.decode_latent(self.encode(x))

    @property
    def first_stage(self) -> bool:
        """True while the autoencoder still trains (fewer than ae_steps steps taken)."""
        return int(self.ae_step) < self.config.ae_steps

    def param_groups(self, train) -> dict[str, dict]:
        """The base's one group split in two with its settings: "main", the U-Net; "autoencoder", the encoder and the
        decoder, stepped in the first stage only."""
        every = super().param_groups(train)["main"]
        ae = {id(p) for p in [*self.encoder.parameters(), *self.decoder.parameters()]}
        return {"main": {**every, "params": [p for p in every["params"] if id(p) not in ae]},
                "autoencoder": {**every, "params": [p for p in every["params"] if id(p) in ae]}}

    def loss(self, batch: dict, part: str = "both") -> dict:
        """part "autoencoder": the L1 reconstruction of batch["x"] from its latents (with latent_noise in
        training); "diffusion": DDPM's L_simple on the latents, computed without a graph through the encoder;
        "both" (validation): both terms logged, the diffusion behind a stop-gradient, and "loss" what the current
        stage trains, as train_step logs it: their sum in the first stage, the diffusion's alone after it."""
        if part not in ("both", "autoencoder", "diffusion"):
            raise UsageError(f"part={part!r}; expected both, autoencoder or diffusion")
        x, out = batch["x"], {}
        if part == "diffusion":
            with torch.no_grad():
                z = self.encode(x)
        else:
            z = self.encode(x)
            z_in = z + self.config.latent_noise * torch.randn_like(z) if self.training else z
            recon = F.l1_loss(self.decoder(z_in).float(), x.float())
            out = {"loss": recon, "recon_l1": recon.detach()}
        if part == "autoencoder":
            return out
        diffusion = super().loss({**batch, "x": z.detach().float()})   # fp32 latents, also under bf16 autocast
        ae = out.get("loss", 0.0) if self.first_stage else 0.0
        return {**out, **diffusion, "loss": diffusion["loss"] + ae}

    def train_step(self, batch: dict, stepper) -> dict:
        """First stage: a step of the autoencoder, then one of the U-Net on the latents; after it, the U-Net's
        alone. With gradient accumulation the stage counts optimizer steps (the last micro-batch of each), so it
        never changes inside one."""
        ae = None
        if self.first_stage:
            ae = stepper.forward(batch, part="autoencoder")
            stepper.step("autoencoder", ae)
            if getattr(stepper, "last_micro", True):
                self.ae_step += 1
        out = stepper.forward(batch, part="diffusion")
        stepper.step("main", out)
        if ae is None:
            return out
        return {**out, "loss": out["loss"].detach() + ae["recon_l1"], "recon_l1": ae["recon_l1"]}

    @torch.no_grad()
    def sample(self, n: int, *, cond=None, generator=None, **controls) -> torch.Tensor:
        """n images in [-1, 1], (n, C, H, W): DDPM.sample's latents (the same controls), decoded."""
        return self.decode_latent(super().sample(n, cond=cond, generator=generator, **controls))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_T (N, latent_channels, h, w) -> images by deterministic DDIM in the latent space, then the decoder."""
        return self.decode_latent(super().decode(z, y))

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """DDPM's unet.onnx on latents, and decoder.onnx: z (batch, latent_channels, h, w) -> image (batch, C, H, W)
        in [-1, 1]."""
        c, lat = self.config, list(self.item_shape())

        def example(b: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
            return (torch.rand(b, *lat, generator=g) * 2 - 1,)
        decoder = Graph("decoder", _DecodeLatent(self), [("z", "float32", [BATCH, *lat])],
                        [("image", "float32", [BATCH, c.in_channels, c.image_size, c.image_size])], example)
        return [*super().onnx_graphs(), decoder]

    def onnx_extras(self) -> dict:
        """DDPM's diffusion process, which runs on latents, and how they become images."""
        return {**super().onnx_extras(),
                "latent_space": {"shape": list(self.item_shape()), "range": [-1.0, 1.0],
                                 "decoder": "decoder.onnx turns the denoised latents into images"}}

    def use_onnx(self, graphs: dict[str, Runner]) -> None:
        """The U-Net and the decoder on their exported graphs (the decoder shadows the method for this model)."""
        super().use_onnx(graphs)
        self.decode_latent = OnnxDecode(graphs["decoder"], 0)


class _DecodeLatent(nn.Module):
    """The exported decoder: latents -> images through the model's own `decode_latent`."""

    def __init__(self, model: LDM):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode_latent(z)
