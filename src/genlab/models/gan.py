"""DCGAN (Radford et al. 2016) with optional spectral norm (Miyato et al. 2018), hinge or BCE loss,
class conditioning through a projection discriminator (Miyato & Koyama 2018) and a mode-seeking term in the
generator's loss (MSGAN, Mao et al. 2019) against a class collapsing to one image.

The two players, their optimizers, their alternating step and sampling are adversarial.py's (shared with
WaveGAN); this module holds the networks and `loss(batch, phase=...)`, one player's loss, or both without a
phase (validation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genlab.errors import UsageError
from genlab.models.adversarial import TwoPlayers
from genlab.models.graphs import Graph, OnnxDecode, Runner, decoder_graph, latent_prior
from genlab.models.layers import n_downsamples

LOSSES = ("bce", "hinge")


# --------------------------------------------------------------------------------------- blocks

def dcgan_init(layer: nn.Module) -> nn.Module:
    """DCGAN's initialisation: weights ~ N(0, 0.02) (BatchNorm scales ~ N(1, 0.02)), biases 0."""
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(layer.weight, 0.0, 0.02)
    elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(layer.weight, 1.0, 0.02)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


class Generator(nn.Module):
    """z (N, latent_dim) [+ labels (N,)] -> images (N, C, H, W) in [-1, 1].

    Linear to a (c0, s0, s0) map, s0 = image_size halved until 4 or odd (8 -> 4, 28 -> 7, 32 -> 4),
    then k ConvTranspose blocks that double the size and halve the channels, then a 3x3 conv and tanh.
    Conditional: a label embedding is concatenated to z (Mirza & Osindero 2014).
    """

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int, num_classes: int,
                 label_dim: int):
        super().__init__()
        k = n_downsamples(image_size)
        c, self.s0 = width * 2 ** k, image_size // 2 ** k
        self.c0 = c
        self.fc = nn.Linear(latent_dim + (label_dim if num_classes > 0 else 0), c * self.s0 ** 2)
        layers: list[nn.Module] = [nn.BatchNorm2d(c), nn.ReLU()]
        for _ in range(k):  # (c, s, s) -> (c/2, 2s, 2s)
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2),
                       nn.ReLU()]
            c //= 2
        layers += [nn.Conv2d(c, channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        # Made after the init, so it keeps nn.Embedding's N(0, 1): the label enters on the same footing as z.
        self.label_emb = nn.Embedding(num_classes, label_dim) if num_classes > 0 else None

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Channels-last maps inside (see GAN.__init__); the images come out in that layout too, which D takes
        as they are and `GAN.decode` makes contiguous."""
        if self.label_emb is not None:
            if y is None:
                raise UsageError("this GAN is class-conditional: the generator needs labels y (N,)")
            z = torch.cat([z, self.label_emb(y).to(z.dtype)], dim=1)
        h = self.fc(z).view(-1, self.c0, self.s0, self.s0)
        return self.net(h.contiguous(memory_format=torch.channels_last))


class Discriminator(nn.Module):
    """Images (N, C, H, W) [+ labels (N,)] -> logits (N,).

    phi: a 3x3 conv, then k stride-2 4x4 convs doubling the channels, LeakyReLU(0.2) after each,
    flattened to (N, F). Unconditional logit = psi(phi(x)); conditional (projection discriminator,
    Miyato & Koyama 2018): logit = psi(phi(x)) + <embed(y), phi(x)>.

    With spectral_norm every weight (embedding included) is divided by its largest singular value,
    making D 1-Lipschitz per layer; no BatchNorm then (SNGAN). Without it, BatchNorm follows the strided
    convs as in DCGAN (never the input layer, which DCGAN found unstable); real and fake batches then go
    through D separately, as in DCGAN, and validation uses its running statistics.
    """

    def __init__(self, channels: int, image_size: int, width: int, num_classes: int, use_sn: bool):
        super().__init__()

        def wrap(layer: nn.Module) -> nn.Module:  # init before the parametrization sees the weight
            dcgan_init(layer)
            return spectral_norm(layer) if use_sn else layer

        k = n_downsamples(image_size)
        layers: list[nn.Module] = [wrap(nn.Conv2d(channels, width, 3, padding=1)), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(k):  # (c, s, s) -> (2c, s/2, s/2)
            layers.append(wrap(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=use_sn)))
            if not use_sn:
                layers.append(dcgan_init(nn.BatchNorm2d(2 * c)))
            layers.append(nn.LeakyReLU(0.2))
            c *= 2
        self.phi = nn.Sequential(*layers, nn.Flatten())
        self.features = c * (image_size // 2 ** k) ** 2
        self.psi = wrap(nn.Linear(self.features, 1))
        self.embed = wrap(nn.Embedding(num_classes, self.features)) if num_classes > 0 else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.phi(x.contiguous(memory_format=torch.channels_last))  # (N, F), in (C, H, W) order
        logit = self.psi(h).squeeze(1)                     # (N,)
        if self.embed is not None:
            if y is None:
                raise UsageError("this GAN is class-conditional: the discriminator needs labels y (N,)")
            logit = logit + (self.embed(y).to(h.dtype) * h).sum(1)
        return logit.float()


# --------------------------------------------------------------------------------------- config

@dataclass
class GANConfig:
    family: str = "gan"
    in_channels: int = 1      # set from the data
    image_size: int = 8       # set from the data
    num_classes: int = 0      # set from the data when training with --conditional; 0 = unconditional
    latent_dim: int = 64
    label_dim: int = 16       # generator's label embedding (conditional models only)
    g_width: int = 32         # generator channels at full resolution; doubled at each halving
    d_width: int = 32         # discriminator channels after the first conv; doubled at each halving
    loss: str = "bce"         # bce (non-saturating: G maximises log D(G(z))) | hinge (SNGAN, Lim & Ye 2017)
    spectral_norm: bool = True  # in D; False gives DCGAN's BatchNorm discriminator instead
    lr_g: float = 2e-4        # these four replace train.lr/beta1/beta2 for the two GAN optimizers
    lr_d: float = 2e-4
    beta1: float = 0.5        # DCGAN: 0.9 makes the two-player dynamics oscillate
    beta2: float = 0.999
    collapse_fraction: float = 0.25  # watch() warns when diversity < this x its highest recorded value
    mode_seeking: float = 0.1  # weight of the mode-seeking term (Mao et al. 2019) in G's loss; 0 = off
    BEFORE = {"mode_seeking": 0.0}  # runs written before the term trained without it


# Clipping is off (train.grad_clip=0): Adam already normalises the gradient scale per parameter, so a
# global-norm clip mostly distorts its moment estimates exactly when the balance between the players
# shifts (and the gradients swing); the reference recipes (DCGAN, SNGAN) do not clip and spectral norm
# is what keeps D in check. Warmup is short: those recipes use a constant learning rate from step 0.
PRESETS = {
    "tiny": {"model.g_width": 16, "model.d_width": 16, "model.latent_dim": 32, "train.batch_size": 64,
             "train.steps": 500, "train.warmup_steps": 10, "train.grad_clip": 0.0},
    "small": {"model.g_width": 32, "model.d_width": 32, "model.latent_dim": 64, "train.batch_size": 64,
              "train.steps": 3000, "train.warmup_steps": 20, "train.grad_clip": 0.0},
    "base": {"model.g_width": 64, "model.d_width": 64, "model.latent_dim": 128, "train.batch_size": 128,
             "train.steps": 10000, "train.warmup_steps": 50, "train.grad_clip": 0.0},
}


# --------------------------------------------------------------------------------------- model

class GAN(TwoPlayers):
    """DCGAN on images: G(z [, y]) -> (C, H, W) in [-1, 1], D a convolutional (projection) discriminator."""

    family = "gan"
    CAPABILITIES = frozenset({"latent"})
    COLLAPSE_HINT = "model.loss=hinge, model.spectral_norm=true or a lower model.lr_g, or an earlier checkpoint"
    LOSSES = LOSSES

    def __init__(self, config: GANConfig):
        if config.mode_seeking < 0:
            raise UsageError(f"model.mode_seeking={config.mode_seeking}; expected a weight >= 0 (0 turns it off)")
        super().__init__(config)
        c = config
        self.generator = Generator(c.latent_dim, c.in_channels, c.image_size, c.g_width, c.num_classes, c.label_dim)
        self.discriminator = Discriminator(c.in_channels, c.image_size, c.d_width, c.num_classes, c.spectral_norm)
        self.init_watch(c.latent_dim, c.num_classes)   # the mode-collapse watch (genlab.models.collapse)
        # Channels-last (NHWC) convolution weights and maps: a training step 1.13-1.18x faster on a CPU
        # (benchmarks/RESULTS.md, issue 16), the same numbers in another order; saved contiguous as usual.
        self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ losses

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Discriminator loss from logits on real and fake batches (N,) each."""
        if self.config.loss == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return F.softplus(-real).mean() + F.softplus(fake).mean()  # -log D(x) - log(1 - D(G(z)))

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Generator loss from D's logits on fakes (N,)."""
        if self.config.loss == "hinge":
            return -fake.mean()
        return F.softplus(-fake).mean()  # non-saturating: -log D(G(z)) (Goodfellow et al. 2014, sec. 3)

    def loss(self, batch: dict, phase: str | None = None) -> dict:
        """phase "d": D's loss on the real batch vs G(z).detach(); "g": G's loss; None (validation): both,
        with "loss" = d_loss + g_loss. d_real/d_fake are D's mean probabilities sigmoid(logit) (for hinge,
        sigmoid of the hinge score: still rises as D calls a batch real). Fakes reuse the batch's labels.

        With model.mode_seeking = w > 0, G's phase pairs its latents: the second half of the fakes takes the first
        half's labels, and G's loss adds w / (r + 1e-5), r = mean |G(z1, y) - G(z2, y)| / mean |z1 - z2| (MSGAN,
        Mao et al. 2019): two latents under one label that give the same image cost G dearly, which is exactly
        a class collapsed to one point. r is logged as "mode_ratio"."""
        x, y, z = self.players_inputs(batch, phase)
        pairs = len(x) // 2 if phase == "g" and self.config.mode_seeking > 0 else 0
        if pairs and y is not None:
            y = torch.cat([y[:pairs], y[:pairs], y[2 * pairs:]])
        with torch.set_grad_enabled(torch.is_grad_enabled() and phase != "d"):  # D's phase needs no G graph
            fake = self.generator(z, y)
        out: dict[str, torch.Tensor] = {}
        if phase in ("d", None):
            out.update(self.d_terms(x, fake, y))
        if phase in ("g", None):
            out["g_loss"] = self.g_loss(self.discriminator(fake, y))
        if pairs:
            ratio = ((fake[:pairs] - fake[pairs:2 * pairs]).abs().mean()
                     / (z[:pairs] - z[pairs:2 * pairs]).abs().mean()).float()
            out["g_loss"] = out["g_loss"] + self.config.mode_seeking / (ratio + 1e-5)
            out["mode_ratio"] = ratio.detach()
        out["loss"] = sum(out[k] for k in ("d_loss", "g_loss") if k in out)
        return out

    def watch_features(self, images: torch.Tensor) -> torch.Tensor:
        """The collapse watch measures spread in pixels (diversity ~0.75 for real 8x8 digits)."""
        return images.flatten(1)

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """generator.onnx: z (batch, latent_dim) [, y (batch,)] -> image (batch, C, H, W) in [-1, 1]."""
        return [decoder_graph("generator", self)]

    def onnx_extras(self) -> dict:
        """The sampling prior: z ~ N(0, I) (truncation is the caller's)."""
        return latent_prior(self.config.latent_dim)

    def use_onnx(self, graphs: dict[str, Runner]) -> None:
        """Generate on the exported graph (an instance attribute: shadows `decode` for this model only)."""
        self.decode = OnnxDecode(graphs["generator"], self.config.num_classes)
