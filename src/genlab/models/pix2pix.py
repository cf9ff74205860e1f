"""pix2pix (Isola et al. 2017): paired image-to-image translation with a conditional GAN.

A U-Net generator G (encoder-decoder with skip connections) maps an input image a to an output b'; a PatchGAN
discriminator D sees (a, b) pairs and calls each N x N patch real or fake. G minimises the conditional GAN loss
plus lambda * L1(b', b) (lambda = 100); D minimises the GAN loss halved. Noise enters only as dropout in the first
decoder blocks, at training and at sampling time (the paper's finding: a noise input z is ignored).

The dropout masks are drawn outside the network, like a GAN's z: `draw(a, generator)` gives them and
`translate(a, masks)` is the deterministic network, so a seed gives the same translation on every machine and the
exported ONNX graph takes the masks as inputs. `model.gan_weight = 0` is the L1-only baseline (no discriminator).
Batches are {"a": inputs (B, Ca, H, W), "b": targets (B, Cb, H, W)} in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UnsupportedError, UsageError
from genlab.models.base import GenerativeModel, Stepper, eval_mode
from genlab.models.controls import Control
from genlab.models.gan import dcgan_init
from genlab.models.graphs import BATCH, Graph, Runner

LOSSES = ("bce", "lsgan")


# --------------------------------------------------------------------------------------- blocks

def unet_depth(image_size: int, max_depth: int) -> int:
    """How many times the U-Net halves the image: down to 1x1 for powers of two (32 -> 5), at most max_depth."""
    depth, s = 0, image_size
    while s % 2 == 0 and s > 1 and depth < max_depth:
        s, depth = s // 2, depth + 1
    return depth


class UNet(nn.Module):
    """a (N, Ca, H, W) -> b' (N, Cb, H, W) in [-1, 1]: Conv(k4, s2) downs with LeakyReLU 0.2 and BatchNorm
    (none on the first and the innermost), ConvTranspose(k4, s2) ups with ReLU and BatchNorm, each up taking the
    matching down's output concatenated (the skip connections), dropout masks on the first `dropout_blocks` ups."""

    def __init__(self, cin: int, cout: int, image_size: int, width: int, max_depth: int, dropout_blocks: int):
        super().__init__()
        depth = unet_depth(image_size, max_depth)
        if depth < 2:
            raise UsageError(f"pix2pix needs images that halve at least twice (image_size {image_size}); expected a "
                             "size divisible by 4, e.g. 32 (data.image_size)")
        widths = [width * min(2 ** i, 8) for i in range(depth)]
        self.sizes = [image_size // 2 ** (i + 1) for i in range(depth)]   # each down's output side
        self.downs = nn.ModuleList()
        for i in range(depth):
            layers = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(cin if i == 0 else widths[i - 1], widths[i], 4, 2, 1, bias=False))
            if 0 < i < depth - 1:
                layers.append(nn.BatchNorm2d(widths[i]))
            self.downs.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList()
        for i in reversed(range(depth)):   # up i mirrors down i: from widths[i] (+ the skip) to widths[i - 1]
            cin_up = widths[i] * (1 if i == depth - 1 else 2)
            if i == 0:
                self.ups.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(cin_up, cout, 4, 2, 1), nn.Tanh()))
            else:
                self.ups.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(cin_up, widths[i - 1], 4, 2, 1, bias=False),
                                              nn.BatchNorm2d(widths[i - 1])))
        self.dropout_blocks = min(dropout_blocks, depth - 1)
        # the masks' shapes (C, s, s): the outputs of the first ups
        self.mask_shapes = [(widths[depth - 2 - j], self.sizes[depth - 2 - j], self.sizes[depth - 2 - j])
                            for j in range(self.dropout_blocks)]
        self.apply(dcgan_init)

    def forward(self, a: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        skips = []
        h = a
        for down in self.downs:
            h = down(h)
            skips.append(h)
        h = skips.pop()
        for j, up in enumerate(self.ups):
            h = up(h)
            if j < len(masks):
                h = h * masks[j]
            if skips:
                h = torch.cat([h, skips.pop()], 1)
        return h


def patch_layers(cin: int, width: int, n_layers: int) -> list[tuple[nn.Module, int, int]]:
    """The PatchGAN's convolutions as (layer, kernel, stride): n_layers stride-2 convs, one stride-1 conv, and the
    stride-1 conv to one logit per patch (pix2pix's 70x70 PatchGAN is n_layers = 3)."""
    out, c = [], cin
    for i in range(n_layers + 1):
        w = width * min(2 ** i, 8)
        stride = 2 if i < n_layers else 1
        out.append((nn.Conv2d(c, w, 4, stride, 1, bias=i == 0), 4, stride))
        c = w
    out.append((nn.Conv2d(c, 1, 4, 1, 1), 4, 1))
    return out


def receptive_field(n_layers: int) -> int:
    """The side of the input patch one output logit of the PatchGAN sees: r = r * stride + (kernel - stride),
    from the last layer back (n_layers 1, 2, 3 -> 16, 34, 70)."""
    r = 1
    for _, k, s in reversed(patch_layers(1, 1, n_layers)):
        r = r * s + (k - s)
    return r


class PatchGAN(nn.Module):
    """(a, b) pairs (N, Ca + Cb, H, W) -> logits (N, 1, H', W'), one per overlapping patch of receptive_field."""

    def __init__(self, cin: int, width: int, n_layers: int):
        super().__init__()
        layers: list[nn.Module] = []
        convs = patch_layers(cin, width, n_layers)
        for i, (conv, _, _) in enumerate(convs):
            layers.append(conv)
            if i < len(convs) - 1:
                if i > 0:
                    layers.append(nn.BatchNorm2d(conv.out_channels))
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([a, b], 1))


# --------------------------------------------------------------------------------------- config

@dataclass
class Pix2PixConfig:
    family: str = "pix2pix"
    in_channels: int = 1      # A's channels, set from the data
    out_channels: int = 1     # B's channels, set from the data
    image_size: int = 32      # set from the data
    g_width: int = 32         # the U-Net's first width (the paper: 64 at 256x256)
    max_depth: int = 8        # the U-Net halves the image at most this often (the paper: 8, 256 -> 1)
    dropout: float = 0.5      # in the first `dropout_blocks` up blocks, at training and at sampling time
    dropout_blocks: int = 3
    d_width: int = 32
    d_layers: int = 1         # PatchGAN stride-2 layers: 1 -> 16x16 patches, 2 -> 34x34, 3 -> 70x70 (the paper)
    loss: str = "bce"         # bce (the paper) | lsgan (least squares, Mao et al. 2017)
    l1_weight: float = 100.0  # lambda
    gan_weight: float = 1.0   # 0 = the L1-only baseline: no discriminator
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999


PRESETS = {
    "tiny": {"model.g_width": 8, "model.d_width": 8, "train.steps": 300, "train.batch_size": 32},
    "small": {"model.g_width": 32, "model.d_width": 32, "train.steps": 3000, "train.batch_size": 32,
              "train.warmup_steps": 0, "train.grad_clip": 0.0},
    "base": {"model.g_width": 64, "model.d_width": 64, "model.d_layers": 2, "train.steps": 20000,
             "train.batch_size": 32, "train.warmup_steps": 0, "train.grad_clip": 0.0},
}


# --------------------------------------------------------------------------------------- model

class Pix2Pix(GenerativeModel):
    """sample(n, cond=a) translates the n input images `a` (N, Ca, H, W) into (N, Cb, H, W)."""

    family = "pix2pix"
    CONTROLS = (Control("dropout", float, 1.0, 0.0, 1.0,
                        help="the share of the training dropout kept when translating (the noise source); "
                             "0 = the deterministic translation"),)

    def __init__(self, config: Pix2PixConfig):
        c = config
        if c.loss not in LOSSES:
            raise UsageError(f"model.loss={c.loss!r}; expected one of {', '.join(LOSSES)}")
        if not 0 <= c.dropout < 1 or c.l1_weight < 0 or c.gan_weight < 0 or c.l1_weight + c.gan_weight == 0:
            raise UsageError(f"model.dropout={c.dropout}, l1_weight={c.l1_weight}, gan_weight={c.gan_weight}: "
                             "expected dropout in [0, 1) and non-negative weights, not both 0")
        super().__init__(config)
        self.generator = UNet(c.in_channels, c.out_channels, c.image_size, c.g_width, c.max_depth, c.dropout_blocks)
        self.discriminator = (PatchGAN(c.in_channels + c.out_channels, c.d_width, c.d_layers)
                              if c.gan_weight > 0 else None)

    def param_groups(self, train) -> dict[str, dict]:
        """Adam groups "g" and (unless L1-only) "d" with the model's lr_g/lr_d and betas (0.5, 0.999)."""
        c = self.config
        nets = [("g", self.generator, c.lr_g)] + ([("d", self.discriminator, c.lr_d)] if self.discriminator else [])
        return {name: {"params": [p for p in net.parameters() if p.requires_grad], "lr": lr,
                       "betas": (c.beta1, c.beta2), "weight_decay": train.weight_decay} for name, net, lr in nets}

    # ------------------------------------------------------------------ losses

    def _gan(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        if self.config.loss == "lsgan":
            return (logits.float() - (1.0 if real else 0.0)).pow(2).mean()
        target = torch.full_like(logits, 1.0 if real else 0.0)
        return F.binary_cross_entropy_with_logits(logits.float(), target)

    def masks(self, n: int, device, generator: torch.Generator | None = None, keep: float = 1.0) -> list[torch.Tensor]:
        """Dropout masks for n images: 0 or 1/(1-p) with p = keep * model.dropout (inverted dropout)."""
        p = keep * self.config.dropout
        where = generator.device if generator is not None else device
        out = []
        for shape in self.generator.mask_shapes:
            u = torch.rand(n, *shape, generator=generator, device=where).to(device)
            out.append((u >= p).float() / (1 - p) if p > 0 else torch.ones_like(u))
        return out

    def loss(self, batch: dict, phase: str | None = None) -> dict:
        """phase "d": D on real pairs vs (a, G(a).detach()); "g": G's GAN loss + lambda * L1; None (validation):
        both, with "loss" = the generator's objective and "l1" the mean absolute error."""
        if phase not in ("d", "g", None):
            raise UsageError(f"Pix2Pix.loss phase={phase!r}; expected 'd', 'g' or None (validation)")
        if "a" not in batch or "b" not in batch:
            raise UsageError("pix2pix trains on image pairs: the batch needs inputs 'a' and targets 'b'")
        a, b = batch["a"], batch["b"]
        c, out = self.config, {}
        if phase == "d" and self.discriminator is None:
            raise UsageError("the L1-only baseline (model.gan_weight=0) has no discriminator phase")
        with torch.set_grad_enabled(torch.is_grad_enabled() and phase != "d"):
            fake = self.generator(a, *self.masks(len(a), a.device))   # global RNG: the trainer seeds it
        if phase in ("d", None) and self.discriminator is not None:
            real_logit, fake_logit = self.discriminator(a, b), self.discriminator(a, fake.detach())
            out["d_loss"] = 0.5 * (self._gan(real_logit, True) + self._gan(fake_logit, False))
            out["d_real"] = torch.sigmoid(real_logit).mean().detach()
            out["d_fake"] = torch.sigmoid(fake_logit).mean().detach()
        if phase in ("g", None):
            out["l1"] = (fake.float() - b.float()).abs().mean()
            g = c.l1_weight * out["l1"]
            if self.discriminator is not None:
                out["g_gan"] = self._gan(self.discriminator(a, fake), True)
                g = g + c.gan_weight * out["g_gan"]
            out["g_loss"] = g
        out["loss"] = out["g_loss"] if "g_loss" in out else out["d_loss"]
        return out

    def train_step(self, batch: dict, stepper: Stepper) -> dict:
        """A D step (unless L1-only), then a G step with D frozen. Returns detached scalars."""
        out_d = {}
        if self.discriminator is not None:
            out_d = stepper.forward(batch, phase="d")
            stepper.step("d", out_d)
        frozen = [p for p in (self.discriminator.parameters() if self.discriminator else []) if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            out_g = stepper.forward(batch, phase="g")
            stepper.step("g", {**out_g, "loss": out_g["g_loss"]})
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return {k: v.detach() for k, v in {**out_d, **out_g, "loss": out_g["g_loss"]}.items()}

    # ------------------------------------------------------------------ translating

    def _inputs(self, n: int, cond) -> torch.Tensor:
        c = self.config
        dev = next(self.parameters()).device
        if cond is None or not torch.is_tensor(cond) or cond.ndim != 4:
            raise UsageError(f"pix2pix translates images: pass cond= the input images, a (n, {c.in_channels}, "
                             f"{c.image_size}, {c.image_size}) tensor in [-1, 1]")
        if tuple(cond.shape[1:]) != (c.in_channels, c.image_size, c.image_size) or len(cond) not in (1, n):
            raise UsageError(f"cond has shape {tuple(cond.shape)}; expected ({n} or 1, {c.in_channels}, "
                             f"{c.image_size}, {c.image_size}) input images")
        return cond.to(dev, torch.float32).expand(n, -1, -1, -1)

    def draw(self, n: int, *, cond=None, generator: torch.Generator | None = None, dropout: float | None = None,
             **controls) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The inputs of `translate`: the images and their dropout masks (from `generator`)."""
        if controls:
            raise UnsupportedError(f"pix2pix.sample got unknown controls {', '.join(controls)}; it takes dropout")
        self.controls()["dropout"].check(dropout)
        a = self._inputs(n, cond)
        return a, self.masks(n, a.device, generator, 1.0 if dropout is None else dropout)

    def translate(self, a: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
        """The U-Net in eval mode (BatchNorm running statistics: each output depends on its own input only)."""
        with eval_mode(self.generator):
            return self.generator(a, *masks)

    @torch.no_grad()
    def sample(self, n: int, *, cond=None, generator: torch.Generator | None = None, **controls) -> torch.Tensor:
        """The translations (n, Cb, H, W) in [-1, 1] of the input images `cond` (n or 1 of them)."""
        return self.translate(*self.draw(n, cond=cond, generator=generator, **controls))

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """generator.onnx: a (batch, Ca, H, W) and the dropout masks (batch, C_j, s_j, s_j) -> b' (batch, Cb, H, W)."""
        c = self.config
        shapes = self.generator.mask_shapes
        ins = [("a", "float32", [BATCH, c.in_channels, c.image_size, c.image_size])] + \
              [(f"mask{j}", "float32", [BATCH, *s]) for j, s in enumerate(shapes)]
        out = [("b", "float32", [BATCH, c.out_channels, c.image_size, c.image_size])]

        def example(b: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
            a = torch.rand(b, c.in_channels, c.image_size, c.image_size, generator=g) * 2 - 1
            return (a, *self.masks(b, torch.device("cpu"), g))
        return [Graph("generator", _Translate(self), ins, out, example)]

    def onnx_extras(self) -> dict:
        """How a consumer draws the masks: 0 or 1/(1-p) per element, p = the dropout rate."""
        return {"dropout": {"rate": self.config.dropout, "masks": [list(s) for s in self.generator.mask_shapes]}}

    def use_onnx(self, graphs: dict[str, Runner]) -> None:
        """Translate on the exported graph (an instance attribute: shadows `translate` for this model only)."""
        graph = graphs["generator"]
        self.translate = lambda a, masks: graph(a, *masks)[0].to(a.device)


class _Translate(nn.Module):
    def __init__(self, model: Pix2Pix):
        super().__init__()
        self.model = model

    def forward(self, a: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        return self.model.generator(a, *masks)
