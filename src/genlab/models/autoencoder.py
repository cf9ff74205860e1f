"""Convolutional autoencoder (`ae`) and variational autoencoder (`vae`, Kingma & Welling 2014).

Both share one encoder/decoder pair from layers.py; the VAE adds the Gaussian posterior
q(z|x) = N(mu, diag(sigma^2)), the reparameterisation trick and the ELBO. With `num_classes > 0`
both become class-conditional (a CVAE, Sohn et al. 2015): the label embedding is fed to the
encoder head and to the decoder, so `sample(n, cond=3)` draws threes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UnsupportedError, UsageError
from genlab.models.base import GenerativeModel, as_labels
from genlab.models.graphs import Graph, OnnxDecode, Runner, decoder_graph, latent_prior
from genlab.models.layers import ConvDecoder, ConvEncoder

LIKELIHOODS = ("auto", "gaussian", "bernoulli")
PRIORS = ("auto", "standard", "class")
BERNOULLI_FROM = 16   # likelihood "auto": Bernoulli for single-channel images at least this wide


@dataclass
class AEConfig:
    family: str = "ae"
    in_channels: int = 1      # set from the data
    image_size: int = 8       # set from the data
    num_classes: int = 0      # set from the data when training with --conditional; 0 = unconditional
    width: int = 32           # channels after the first conv; doubled at each halving
    latent_dim: int = 16
    label_dim: int = 16       # size of the label embedding (conditional models only)
    label_film: bool = True   # conditional models: the label also modulates every decoder block (FiLM)
    BEFORE = {"label_film": False}  # runs written before label_film had the label at the decoder's input only


@dataclass
class VAEConfig(AEConfig):
    family: str = "vae"
    beta: float = 1.0               # weight of the KL term (beta-VAE, Higgins et al. 2017); 1 = the ELBO
    likelihood: str = "auto"        # auto | gaussian | bernoulli (pixels rescaled to [0, 1] as targets); auto:
                                    # bernoulli for grey images from 16x16 (handwriting: 28x28 MNIST), else gaussian
    obs_sigma: float = 0.5          # std of the Gaussian likelihood p(x|z) in [-1, 1] pixel units; smaller =
                                    # sharper reconstructions but a KL-heavy, holey latent space (0.5 measured best FID on digits)
    prior: str = "auto"             # standard: p(z) = N(0, I); class (conditional runs): p(z|y) = N(m_y, diag(s_y^2)),
                                    # a learned Gaussian per class, so the latent may carry the class without
                                    # fighting the label (Sohn et al. 2015's conditional prior, one per label);
                                    # auto: class for conditional runs, else standard
    BEFORE = {**AEConfig.BEFORE, "prior": "standard"}  # runs written before the class prior had N(0, I)


# Presets set model size and training length together; `--set` overrides any key afterwards.
PRESETS = {
    "tiny": {"model.width": 16, "model.latent_dim": 8, "train.batch_size": 64, "train.steps": 300},
    "small": {"model.width": 32, "model.latent_dim": 16, "train.batch_size": 64, "train.steps": 2000},
    "base": {"model.width": 64, "model.latent_dim": 32, "train.batch_size": 128, "train.steps": 10000},
}


class AE(GenerativeModel):
    """Deterministic autoencoder. Sampling decodes z ~ N(m, s^2), a Gaussian fitted to training codes."""

    family = "ae"
    CAPABILITIES = frozenset({"latent", "reconstruct"})

    @property
    def label_required(self) -> bool:  # a conditional autoencoder has no unconditional mode
        return bool(self.config.num_classes)

    def __init__(self, config: AEConfig):
        super().__init__(config)
        c = config
        for name in ("latent_dim", "width", "image_size", "in_channels"):
            if getattr(c, name) < 1:
                raise UsageError(f"model.{name}={getattr(c, name)}; expected a positive size")
        self.encoder = ConvEncoder(c.in_channels, c.image_size, c.width)
        self.label_emb = nn.Embedding(c.num_classes, c.label_dim) if c.num_classes > 0 else None
        extra = c.label_dim if c.num_classes > 0 else 0
        self.head = nn.Linear(self.encoder.out_features + extra, self.code_size())
        film = c.label_dim if c.num_classes > 0 and c.label_film else 0
        self.decoder = ConvDecoder(c.latent_dim + extra, c.in_channels, c.image_size, c.width, cond_dim=film)
        # Running mean/std of training codes: the AE's sampling prior (a VAE uses its prior p(z) or p(z|y) instead).
        self.register_buffer("z_mean", torch.zeros(c.latent_dim))
        self.register_buffer("z_std", torch.ones(c.latent_dim))

    def code_size(self) -> int:
        return self.config.latent_dim

    def _need_labels(self, y: torch.Tensor | None) -> None:
        if self.label_emb is not None and y is None:
            raise UsageError("this model is class-conditional: pass labels (cond=...) of 0.."
                             f"{self.config.num_classes - 1}")

    def _with_label(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        self._need_labels(y)
        return h if self.label_emb is None else torch.cat([h, self.label_emb(y)], dim=1)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, C, H, W) -> codes (N, latent_dim) (the posterior mean for a VAE)."""
        h = self.encoder(x).flatten(1)
        return self.head(self._with_label(h, y))[:, : self.config.latent_dim]

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self._with_label(z, y)
        return self.decoder(h, self.label_emb(y) if self.decoder.film is not None else None)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (N, latent_dim) -> images in [-1, 1]."""
        return self.decode_logits(z, y).clamp(-1, 1)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, y), y)

    def latent(self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """n draws from the sampling prior, shape (n, latent_dim) (the labels y play no part in the AE's)."""
        # noise is drawn on the CPU so a seed gives the same samples on every device
        eps = torch.randn(n, self.config.latent_dim, generator=generator).to(self.z_mean.device)
        return self.z_mean + self.z_std * eps

    def loss(self, batch: dict) -> dict:
        x, y = batch["x"], batch.get("y")
        z = self.encode(x, y)
        if self.training:
            with torch.no_grad():  # track the code distribution for sampling
                self.z_mean.lerp_(z.float().mean(0), 0.01)
                self.z_std.lerp_(z.float().std(0) if len(z) > 1 else self.z_std, 0.01)
        mse = F.mse_loss(self.decode_logits(z, y), x)
        return {"loss": mse, "recon_mse": mse.detach()}

    def draw(self, n: int, *, cond=None, generator: torch.Generator | None = None,
             **controls) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The random inputs of `sample`: latents z and labels y, so that sample = decode(*draw(...))."""
        if controls:
            raise UnsupportedError(f"{self.family}.sample takes no controls; got {', '.join(controls)}")
        y = as_labels(cond, n, self.config.num_classes, self.z_mean.device)
        return self.latent(n, generator, y), y

    @torch.no_grad()
    def sample(self, n: int, *, cond=None, generator: torch.Generator | None = None, **controls) -> torch.Tensor:
        """n images in [-1, 1], (n, C, H, W). `cond`: a label or one label per sample (conditional models)."""
        return self.decode(*self.draw(n, cond=cond, generator=generator, **controls))

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """decoder.onnx: z (batch, latent_dim) [, y (batch,)] -> image (batch, C, H, W) in [-1, 1]."""
        return [decoder_graph("decoder", self)]

    def onnx_extras(self) -> dict:
        """The sampling prior: z = mean + std * N(0, I), fitted to training codes."""
        return latent_prior(self.config.latent_dim, self.z_mean.tolist(), self.z_std.tolist())

    def use_onnx(self, graphs: dict[str, Runner]) -> None:
        """Decode on the exported graph (an instance attribute: shadows the method for this model only)."""
        self.decode = OnnxDecode(graphs["decoder"], self.config.num_classes)


def prior_of(c: VAEConfig) -> str:
    """model.prior with "auto" resolved: the class prior for class-conditional runs. Measured on the built-in digits
    at 28x28, 5 minutes (benchmarks/RESULTS.md, issue 16), it raised conditional accuracy and lowered FID and the
    reconstruction error with either likelihood."""
    if c.prior != "auto":
        return c.prior
    return "class" if c.num_classes > 0 else "standard"


def likelihood_of(c: VAEConfig) -> str:
    """model.likelihood with "auto" resolved. Measured on the built-in digits, class-conditional, 5 minutes
    (benchmarks/RESULTS.md, issue 16): at 28x28 the Gaussian's latent carries the class (a linear probe reads it
    back 69% of the time), so samples drawn from the prior follow their label only 82% of the time, against 98%
    for the Bernoulli, whose FID is also lower; at 8x8 the Gaussian has the lower FID (14 against 26) and both
    follow the label. Colour images keep the Gaussian (Bernoulli is for near-binary grey images)."""
    if c.likelihood != "auto":
        return c.likelihood
    return "bernoulli" if c.in_channels == 1 and c.image_size >= BERNOULLI_FROM else "gaussian"


class VAE(AE):
    """Variational autoencoder: loss = -ELBO with KL weight `beta`, per image, averaged over the batch."""

    family = "vae"

    def __init__(self, config: VAEConfig):
        if config.likelihood not in LIKELIHOODS:
            raise UsageError(f"model.likelihood={config.likelihood!r}; expected one of {', '.join(LIKELIHOODS)}")
        if not config.obs_sigma > 0:
            raise UsageError(f"model.obs_sigma={config.obs_sigma}; expected a positive standard deviation "
                             "(0.5 by default; smaller weighs reconstruction more)")
        if not config.beta >= 0:
            raise UsageError(f"model.beta={config.beta}; expected a KL weight >= 0 (1 is the ELBO)")
        if config.prior not in PRIORS:
            raise UsageError(f"model.prior={config.prior!r}; expected one of {', '.join(PRIORS)}")
        if prior_of(config) == "class" and config.num_classes < 1:
            raise UsageError("model.prior=class is a prior per label: it needs a class-conditional run "
                             "(--conditional); use model.prior=standard without labels")
        super().__init__(config)
        self.likelihood = likelihood_of(config)
        # p(z|y): a mean and a log-variance per class, starting as N(0, I)
        self.prior_mean = self.prior_logvar = None
        if prior_of(config) == "class":
            self.prior_mean = nn.Embedding(config.num_classes, config.latent_dim)
            self.prior_logvar = nn.Embedding(config.num_classes, config.latent_dim)
            nn.init.zeros_(self.prior_mean.weight)
            nn.init.zeros_(self.prior_logvar.weight)

    def code_size(self) -> int:
        return 2 * self.config.latent_dim  # mu and log-variance

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): mean and log-variance, each (N, latent_dim)."""
        h = self.head(self._with_label(self.encoder(x).flatten(1), y))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.decode_logits(z, y)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(logits) * 2 - 1
        return logits.clamp(-1, 1)

    def prior(self, y: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z|y)'s mean and log-variance, each (n, latent_dim): zeros for N(0, I), the label's rows for the class
        prior."""
        if self.prior_mean is None:
            zeros = torch.zeros(n, self.config.latent_dim, device=self.z_mean.device)
            return zeros, zeros
        self._need_labels(y)
        return self.prior_mean(y), self.prior_logvar(y).clamp(-30, 20)

    def latent(self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """n draws from p(z|y), shape (n, latent_dim); the noise is drawn on the CPU, as AE.latent's."""
        eps = torch.randn(n, self.config.latent_dim, generator=generator).to(self.z_mean.device)
        mean, logvar = self.prior(y, n)
        return mean + torch.exp(0.5 * logvar) * eps

    def nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image (nats), (N,)."""
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(logits, (x + 1) / 2, reduction="none").flatten(1).sum(1)
        s = self.config.obs_sigma
        sq = (logits - x).pow(2).flatten(1).sum(1)
        return sq / (2 * s * s) + x[0].numel() * 0.5 * math.log(2 * math.pi * s * s)

    def loss(self, batch: dict) -> dict:
        x, y = batch["x"], batch.get("y")
        mu, logvar = self.posterior(x, y)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation trick
        logits = self.decode_logits(z, y)
        nll = self.nll(logits.float(), x.float())
        # KL(q(z|x, y) || p(z|y)) in closed form for two diagonal Gaussians, summed over latent dims: (N,)
        p_mean, p_logvar = (t.float() for t in self.prior(y, len(x)))
        mu, logvar = mu.float(), logvar.float()
        kl = 0.5 * (p_logvar - logvar + (logvar.exp() + (mu - p_mean).pow(2)) / p_logvar.exp() - 1).sum(1)
        loss = (nll + self.config.beta * kl).mean()
        recon = self.decode(z, y)
        return {"loss": loss, "elbo": -(nll + kl).mean().detach(), "kl": kl.mean().detach(),
                "recon_mse": F.mse_loss(recon.float(), x.float()).detach()}

    def onnx_extras(self) -> dict:
        """The sampling prior: z ~ N(0, I), or with the class prior z = mean[y] + std[y] * N(0, I), a row per class."""
        if self.prior_mean is None:
            return latent_prior(self.config.latent_dim)
        std = torch.exp(0.5 * self.prior_logvar.weight.clamp(-30, 20))
        return latent_prior(self.config.latent_dim, self.prior_mean.weight.tolist(), std.tolist())
