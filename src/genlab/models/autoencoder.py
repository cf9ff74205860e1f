"""Convolutional autoencoder (`ae`) and variational autoencoder (`vae`, Kingma & Welling 2014).

Both share one encoder/decoder pair from layers.py; the VAE adds the Gaussian posterior
q(z|x) = N(mu, diag(sigma^2)), the reparameterisation trick and the ELBO. With `num_classes > 0`
both become class-conditional (a CVAE, Sohn et al. 2015): the label embedding is fed to the
encoder head and to the decoder, so `sample(n, cond=3)` draws threes. Both sample from a
Gaussian per class fitted to their training codes (`model.prior`), not from N(0, I).
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
PRIORS = ("fitted", "standard")
BERNOULLI_FROM = 16   # likelihood "auto": Bernoulli for single-channel images at least this wide
TRACK = 0.01          # how far each training batch moves the statistics of the codes (an EMA's rate); the
                      # fitted prior averages its first 1 / TRACK batches evenly, then moves at this rate
JITTER = 1e-5         # added to a fitted covariance's diagonal before its Cholesky factor


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
    prior: str = "fitted"     # what sampling draws z from. fitted: a full-covariance Gaussian per class (one without
                              # labels) fitted to the training codes (ex-post density estimation, Ghosh et al. 2020);
                              # standard: the family's original one (AE: a diagonal Gaussian over all codes; VAE:
                              # N(0, I), the ELBO's prior). Training is the same either way
    # runs written before label_film had the label at the decoder's input only; before the fitted prior, the standard
    BEFORE = {"label_film": False, "prior": "standard"}


@dataclass
class VAEConfig(AEConfig):
    family: str = "vae"
    beta: float = 1.0               # weight of the KL term (beta-VAE, Higgins et al. 2017); 1 = the ELBO
    likelihood: str = "gaussian"    # gaussian | bernoulli (pixels rescaled to [0, 1] as targets) | auto: bernoulli
                                    # for grey images from 16x16, else gaussian (the default before the fitted prior)
    obs_sigma: float = 0.5          # std of the Gaussian likelihood p(x|z) in [-1, 1] pixel units; smaller =
                                    # sharper reconstructions but a KL-heavy, holey latent space (0.5 measured best FID on digits)


# Presets set model size and training length together; `--set` overrides any key afterwards.
PRESETS = {
    "tiny": {"model.width": 16, "model.latent_dim": 8, "train.batch_size": 64, "train.steps": 300},
    "small": {"model.width": 32, "model.latent_dim": 16, "train.batch_size": 64, "train.steps": 2000},
    "base": {"model.width": 64, "model.latent_dim": 32, "train.batch_size": 128, "train.steps": 10000},
}


class AE(GenerativeModel):
    """Deterministic autoencoder. Sampling decodes z from a Gaussian per class fitted to the training codes."""

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
        # Running mean/std of all training codes: the AE's standard prior (kept in every run's weights file)
        self.register_buffer("z_mean", torch.zeros(c.latent_dim))
        self.register_buffer("z_std", torch.ones(c.latent_dim))
        if c.prior not in PRIORS:
            raise UsageError(f"model.prior={c.prior!r}; expected one of {', '.join(PRIORS)}")
        self.fitted = c.prior == "fitted"
        if self.fitted:
            # the training codes' running mean and covariance, a row per class (one without labels), and how many
            # batches each row has seen; a row never seen is N(0, I). Saved with the weights
            rows = max(c.num_classes, 1)
            self.register_buffer("prior_mean", torch.zeros(rows, c.latent_dim))
            self.register_buffer("prior_cov", torch.eye(c.latent_dim).repeat(rows, 1, 1))
            self.register_buffer("prior_batches", torch.zeros(rows))

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
        return self.to_image(self.decode_logits(z, y))

    def to_image(self, logits: torch.Tensor) -> torch.Tensor:
        """The decoder's output -> the image in [-1, 1] it stands for: clamped (the VAE: its likelihood's mean)."""
        return logits.clamp(-1, 1)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, y), y)

    def latent(self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """n draws from the sampling prior (fitted: the label's Gaussian), shape (n, latent_dim)."""
        # noise is drawn on the CPU so a seed gives the same samples on every device
        eps = torch.randn(n, self.config.latent_dim, generator=generator).to(self.z_mean.device)
        if not self.fitted:
            return self.standard_latent(eps)
        mean, tril = self.fitted_prior()
        rows = self._rows(y, n)
        return mean[rows] + (tril[rows] @ eps[:, :, None]).squeeze(2)

    def standard_latent(self, eps: torch.Tensor) -> torch.Tensor:
        """The standard prior's draws from noise eps: a diagonal Gaussian over all training codes."""
        return self.z_mean + self.z_std * eps

    def _rows(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        """The fitted prior's row of each item: its label, or row 0 for unconditional models (which ignore labels,
        as their encoder and decoder do)."""
        if self.label_emb is None:
            return torch.zeros(n, dtype=torch.long, device=self.prior_mean.device)
        self._need_labels(y)
        return y

    @torch.no_grad()
    def track(self, z: torch.Tensor, y: torch.Tensor | None) -> None:
        """A training batch's codes -> the sampling prior's statistics."""
        if self.fitted:
            self.track_codes(z, y)
        else:
            self.track_standard(z)

    def track_standard(self, z: torch.Tensor) -> None:
        """The standard prior's running mean and std over all training codes."""
        self.z_mean.lerp_(z.float().mean(0), TRACK)
        self.z_std.lerp_(z.float().std(0) if len(z) > 1 else self.z_std, TRACK)

    @torch.no_grad()
    def track_codes(self, z: torch.Tensor, y: torch.Tensor | None) -> None:
        """Mix this batch's codes of each class into that class's fitted mean and covariance, with weight
        max(TRACK, 1 / batches seen): an even average at first, an exponential one after. In float32 also under
        autocast, and as centred statistics (not E[z z^T] - mean mean^T, which cancels badly for large means)."""
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            onehot = F.one_hot(self._rows(y, len(z)), len(self.prior_mean)).float()       # (N, rows)
            count = onehot.sum(0)
            seen = count > 0
            mean = (onehot.T @ z) / count.clamp(min=1)[:, None]
            dz = z[:, None, :] - mean[None]                                                # (N, rows, d)
            cov = torch.einsum("nk,nki,nkj->kij", onehot, dz, dz) / count.clamp(min=1)[:, None, None]
            batches = self.prior_batches + seen.float()
            w = torch.where(seen, (1 / batches.clamp(min=1)).clamp(min=TRACK), torch.zeros_like(batches))
            shift = mean - self.prior_mean                 # the mixture's covariance adds its means' spread
            self.prior_cov.copy_((1 - w)[:, None, None] * self.prior_cov + w[:, None, None] * cov
                                 + (w * (1 - w))[:, None, None] * shift[:, :, None] * shift[:, None, :])
            self.prior_mean.add_(w[:, None] * shift)
            self.prior_batches.copy_(batches)

    def fitted_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fitted Gaussians: means (rows, latent_dim) and the Cholesky factors of their covariances (rows,
        latent_dim, latent_dim)."""
        cov = self.prior_cov.float()
        eye = torch.eye(cov.shape[-1], device=cov.device)
        tril, info = torch.linalg.cholesky_ex((cov + cov.transpose(1, 2)) / 2 + JITTER * eye)
        if info.any() or not (torch.isfinite(tril).all() and torch.isfinite(self.prior_mean).all()):
            raise UsageError(f"this {self.family}'s fitted prior (prior_mean, prior_cov in model.safetensors) is not a "
                             "Gaussian: the weights file is damaged or was edited; retrain, or sample with "
                             "model.prior=standard")
        return self.prior_mean.float(), tril

    def loss(self, batch: dict) -> dict:
        x, y = batch["x"], batch.get("y")
        z = self.encode(x, y)
        if self.training:
            self.track(z, y)
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
        """The sampling prior: the fitted z = mean[y] + scale_tril[y] @ N(0, I), a row per class; or the standard
        z = mean + std * N(0, I) over all codes."""
        if not self.fitted:
            return latent_prior(self.config.latent_dim, self.z_mean.tolist(), self.z_std.tolist())
        mean, tril = self.fitted_prior()
        return latent_prior(self.config.latent_dim, mean.tolist(), scale_tril=tril.tolist())

    def use_onnx(self, graphs: dict[str, Runner]) -> None:
        """Decode on the exported graph (an instance attribute: shadows the method for this model only)."""
        self.decode = OnnxDecode(graphs["decoder"], self.config.num_classes)


def likelihood_of(c: VAEConfig) -> str:
    """model.likelihood with "auto" resolved. Measured on the built-in digits, class-conditional, 5 minutes
    (benchmarks/RESULTS.md, issue 16): at 28x28 the Gaussian's latent carries the class, so samples drawn from
    N(0, I) follow their label only 67-82% of the time, against 95-98% for the Bernoulli; "auto" chose the Bernoulli
    there. Drawn from the fitted prior, the Gaussian follows its label 99.4-99.7% of the time with the lower FID and
    reconstruction error, so new runs default to it."""
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
        super().__init__(config)
        self.likelihood = likelihood_of(config)

    def code_size(self) -> int:
        return 2 * self.config.latent_dim  # mu and log-variance

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): mean and log-variance, each (N, latent_dim)."""
        h = self.head(self._with_label(self.encoder(x).flatten(1), y))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def to_image(self, logits: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean in [-1, 1]: the Bernoulli's p rescaled, or the Gaussian's mean clamped."""
        if self.likelihood == "bernoulli":
            return torch.sigmoid(logits) * 2 - 1
        return super().to_image(logits)

    def standard_latent(self, eps: torch.Tensor) -> torch.Tensor:
        """The standard prior N(0, I): the noise itself."""
        return eps

    def track_standard(self, z: torch.Tensor) -> None:
        """The standard prior N(0, I) has nothing to track."""

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
        # KL(q(z|x) || N(0, I)) in closed form, summed over latent dims: (N,)
        kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).sum(1)
        if self.training:
            self.track(z, y)
        loss = (nll + self.config.beta * kl).mean()
        with torch.no_grad():  # the logged error reads the same decoder pass as the loss, not a second one
            recon_mse = F.mse_loss(self.to_image(logits.float()), x.float())
        return {"loss": loss, "elbo": -(nll + kl).mean().detach(), "kl": kl.mean().detach(), "recon_mse": recon_mse}

    def onnx_extras(self) -> dict:
        """The sampling prior: the fitted one (as the AE's), or z ~ N(0, I)."""
        return super().onnx_extras() if self.fitted else latent_prior(self.config.latent_dim)
