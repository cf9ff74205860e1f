"""WaveGAN (Donahue, McAuley & Puckette 2019): a 1-D convolutional GAN on raw waveforms.

Generator: z [+ a label embedding] -> linear -> (c0, l0) -> k transposed 1-D convolutions (kernel 25, stride 4,
ReLU between them) -> tanh, cropped to exactly `length` samples. Discriminator: k strided 1-D convolutions
(kernel 25, stride 4) with LeakyReLU(0.2) and phase shuffle between them, then a linear output; conditional by
projection (Miyato & Koyama 2018) as models/gan.py's, but on the features summed over time (their formulation:
the label term then ignores where in the clip a sound lies; on the two tones, WGAN-GP at lr 1e-3, it learnt the
labels in 100 steps on 4 of 4 seeds, against 100-150 with gan.py's flattened features). No BatchNorm, as in the
paper.

Two players, two optimizers, as in gan.py (both from adversarial.py): `train_step` takes `d_steps` discriminator
steps, then a generator step with the discriminator frozen. The loss is the paper's
WGAN-GP (Gulrajani et al. 2017; its penalty needs a double backward) or hinge (best with spectral norm in D, SNGAN).
On tests/test_wavegan.py's two tones (lr 1e-3, width 8) WGAN-GP made the clips follow their labels within
100-150 steps on 4 of 4 seeds, where hinge with spectral norm took 400-800 steps or had not managed in 800.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genlab.errors import UsageError
from genlab.models.adversarial import TwoPlayers
from genlab.models.graphs import BATCH, Graph, OnnxDecode, Runner, decoder_graph, latent_prior

LOSSES = ("wgan-gp", "hinge")
KERNEL, STRIDE = 25, 4   # the paper's; padding 11 makes each layer scale the length by exactly 4
PAD, OUT_PAD = 11, 1     # ConvTranspose1d: (l - 1) * 4 - 22 + 25 + 1 = 4 l; Conv1d: l -> (l - 3) // 4 + 1
SMALLEST = 16            # the generator's first map is at least this long (the paper's 16 at 16384 samples)


# --------------------------------------------------------------------------------------- blocks

def n_upsamples(length: int) -> int:
    """The number k >= 1 of x4 layers: the largest with SMALLEST * 4**k <= length (16384 -> 5, 8000 -> 4,
    1024 -> 3, 1000 -> 2). The generator starts from ceil(length / 4**k) samples."""
    k = 1
    while SMALLEST * 4 ** (k + 1) <= length:
        k += 1
    return k


RELU, LEAKY, LINEAR = math.sqrt(2), math.sqrt(2 / (1 + 0.2 ** 2)), 1.0   # He et al. 2015's gains


def he_init(layer: nn.Module, fan_in: float, gain: float) -> nn.Module:
    """Uniform weights of std gain / sqrt(fan_in), zero biases (He et al. 2015), `fan_in` being the inputs each
    output sums (a transposed conv's is in_channels * kernel / stride, not the out_channels * kernel torch's own
    init assumes). Without BatchNorm this keeps G's activations at scale through its depth: at init G's clips have
    std 0.54-0.62 at every preset, 8 kHz and 1024 Hz, against 0.006 with the reference's Glorot (TensorFlow's
    default), which also learnt the two tones more slowly (hinge, lr 1e-3: not within 600 steps, against 300),
    and up to 12% of samples past |0.99| with torch's fan_in (base at 8 kHz)."""
    bound = math.sqrt(3) * gain / math.sqrt(fan_in)
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)
    return layer


class PhaseShuffle(nn.Module):
    """Phase shuffle (WaveGAN, sec. 3.3): in training, each example's activations (B, C, L) move by its own random
    integer s in [-n, n], out[..., t] = x[..., t - s], the |s| samples uncovered at one end filled by reflection;
    so the discriminator cannot key on the exact phase of the generator's upsampling artifacts. The identity in
    eval mode and at n = 0. The reference code draws one shift per batch; here each example draws its own.
    The shifts come from the global RNG, which the trainer seeds."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.n == 0:
            return x
        b, c, length = x.shape
        shift = torch.randint(-self.n, self.n + 1, (b, 1, 1), device=x.device)
        idx = torch.arange(length, device=x.device) + self.n - shift          # (B, 1, L), into the padded signal
        return F.pad(x, (self.n, self.n), mode="reflect").gather(2, idx.expand(b, c, length))


class Generator(nn.Module):
    """z (N, latent_dim) [+ labels (N,)] -> clips (N, 1, length) in [-1, 1].

    Linear to a (c0, l0) map, c0 = width * 2**(k-1), l0 = ceil(length / 4**k), ReLU; then k transposed convs,
    each x4 in length, halving the channels (the last one down to 1), ReLU between them; tanh; crop to `length`.
    Conditional: a label embedding is concatenated to z (Mirza & Osindero 2014), as in gan.py.
    """

    def __init__(self, latent_dim: int, length: int, width: int, num_classes: int, label_dim: int):
        super().__init__()
        k = n_upsamples(length)
        self.length, self.l0, self.c0 = length, -(-length // STRIDE ** k), width * 2 ** (k - 1)
        z_dim = latent_dim + (label_dim if num_classes > 0 else 0)
        self.fc = he_init(nn.Linear(z_dim, self.c0 * self.l0), z_dim, RELU)
        layers: list[nn.Module] = [nn.ReLU()]
        c = self.c0
        for i in range(k):  # (c, l) -> (c / 2, 4 l), the last to one channel
            out = 1 if i == k - 1 else c // 2
            layers.append(he_init(nn.ConvTranspose1d(c, out, KERNEL, STRIDE, padding=PAD, output_padding=OUT_PAD),
                                  c * KERNEL / STRIDE, LINEAR if i == k - 1 else RELU))
            layers.append(nn.Tanh() if i == k - 1 else nn.ReLU())
            c = out
        self.net = nn.Sequential(*layers)
        self.label_emb = nn.Embedding(num_classes, label_dim) if num_classes > 0 else None  # N(0, 1), like z

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_emb is not None:
            if y is None:
                raise UsageError("this WaveGAN is class-conditional: the generator needs labels y (N,)")
            z = torch.cat([z, self.label_emb(y).to(z.dtype)], dim=1)
        return self.net(self.fc(z).view(-1, self.c0, self.l0))[..., :self.length]


class Discriminator(nn.Module):
    """Clips (N, 1, length) [+ labels (N,)] -> logits (N,).

    phi: k convs (kernel 25, stride 4), width, 2 width, ... channels, LeakyReLU(0.2) after each and phase shuffle
    after all but the last: (N, C, L). Unconditional logit = psi(flatten(phi(x))); conditional (projection
    discriminator): logit = psi(flatten(phi(x))) + <embed(y), sum over time of phi(x)>. With spectral_norm every
    weight (embedding included) is divided by its largest singular value.
    """

    def __init__(self, length: int, width: int, num_classes: int, use_sn: bool, shuffle: int):
        super().__init__()

        def wrap(layer: nn.Module) -> nn.Module:  # init before the parametrization sees the weight
            return spectral_norm(layer) if use_sn else layer

        k = n_upsamples(length)
        layers: list[nn.Module] = []
        c_in, c, size = 1, width, length
        for i in range(k):  # (c_in, size) -> (c, size / 4)
            conv = he_init(nn.Conv1d(c_in, c, KERNEL, STRIDE, padding=PAD), c_in * KERNEL, LEAKY)
            layers += [wrap(conv), nn.LeakyReLU(0.2)]
            size = (size + 2 * PAD - KERNEL) // STRIDE + 1
            if i < k - 1:
                if shuffle >= size:
                    raise UsageError(f"model.phase_shuffle={shuffle} is too large for a {size}-sample activation "
                                     f"of {length}-sample clips; expected at most {size - 1}")
                layers.append(PhaseShuffle(shuffle))
            c_in, c = c, 2 * c
        self.phi = nn.Sequential(*layers)
        self.channels, self.features = c_in, c_in * size
        self.psi = wrap(he_init(nn.Linear(self.features, 1), self.features, LINEAR))
        self.embed = None
        if num_classes > 0:  # (classes, C), initialised on the same footing as psi's weight: std 1 / sqrt(F)
            emb = nn.Embedding(num_classes, self.channels)
            nn.init.uniform_(emb.weight, -math.sqrt(3 / self.features), math.sqrt(3 / self.features))
            self.embed = wrap(emb)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.phi(x)                                    # (N, C, L)
        logit = self.psi(h.flatten(1)).squeeze(1)          # (N,)
        if self.embed is not None:
            if y is None:
                raise UsageError("this WaveGAN is class-conditional: the discriminator needs labels y (N,)")
            logit = logit + (self.embed(y).to(h.dtype) * h.sum(2)).sum(1)
        return logit.float()


# --------------------------------------------------------------------------------------- config

@dataclass
class WaveGANConfig:
    family: str = "wavegan"
    sample_rate: int = 8000   # set from the data (Hz)
    length: int = 8000        # set from the data: samples per clip
    num_classes: int = 0      # set from the data when training with --conditional; 0 = unconditional
    latent_dim: int = 100     # the paper's
    label_dim: int = 16       # generator's label embedding (conditional models only)
    g_width: int = 16         # generator channels before its last layer; doubled at each earlier one (paper: 64)
    d_width: int = 16         # discriminator channels after its first conv; doubled at each later one (paper: 64)
    phase_shuffle: int = 2    # n: D's activations shift by a random integer in [-n, n] in training; 0 = off
    loss: str = "wgan-gp"     # wgan-gp (the paper's: Wasserstein loss + gradient penalty) | hinge (Lim & Ye 2017)
    spectral_norm: bool = False  # in D (with hinge: SNGAN); the paper's WGAN-GP has none
    gp_weight: float = 10.0   # wgan-gp: lambda of the gradient penalty (Gulrajani et al. 2017)
    d_steps: int = 1          # D steps per G step, on the same real batch (the paper: 5, at 5x a D step's cost)
    lr_g: float = 3e-4        # these four replace train.lr/beta1/beta2 for the two optimizers (the paper: 1e-4 with
    lr_d: float = 3e-4        # d_steps 5 had not learnt the two tones in 200 steps; 3e-4 had by 300)
    beta1: float = 0.5        # the paper's Adam betas
    beta2: float = 0.9
    collapse_fraction: float = 0.25  # watch() warns when diversity < this x its highest recorded value


# Clipping off and a short warmup, as gan.py's presets (the reference recipes use neither).
PRESETS = {
    "tiny": {"model.g_width": 8, "model.d_width": 8, "model.latent_dim": 32, "train.batch_size": 32,
             "train.steps": 500, "train.warmup_steps": 10, "train.grad_clip": 0.0},
    "small": {"model.g_width": 16, "model.d_width": 16, "model.latent_dim": 64, "train.batch_size": 64,
              "train.steps": 3000, "train.warmup_steps": 20, "train.grad_clip": 0.0},
    "base": {"model.g_width": 64, "model.d_width": 64, "model.latent_dim": 100, "train.batch_size": 64,
             "train.steps": 20000, "train.warmup_steps": 50, "train.grad_clip": 0.0},
}


# --------------------------------------------------------------------------------------- model

class WaveGAN(TwoPlayers):
    """WaveGAN on raw waveforms: G(z [, y]) -> (1, length) in [-1, 1], D a strided 1-D convolutional one."""

    family = "wavegan"
    CAPABILITIES = frozenset({"latent"})
    COLLAPSE_WHAT = "spectral diversity"
    COLLAPSE_HINT = ("a lower model.lr_g, more D steps per G step (model.d_steps=5, the paper's) or an earlier "
                     "checkpoint")
    LOSSES = LOSSES

    def __init__(self, config: WaveGANConfig):
        c = config
        if c.length < SMALLEST or c.phase_shuffle < 0 or c.d_steps < 1:
            raise UsageError(f"wavegan needs length >= {SMALLEST}, phase_shuffle >= 0 and d_steps >= 1; got "
                             f"length={c.length}, phase_shuffle={c.phase_shuffle}, d_steps={c.d_steps}")
        super().__init__(config)
        self.generator = Generator(c.latent_dim, c.length, c.g_width, c.num_classes, c.label_dim)
        self.discriminator = Discriminator(c.length, c.d_width, c.num_classes, c.spectral_norm, c.phase_shuffle)
        self.init_watch(c.latent_dim, c.num_classes)   # the mode-collapse watch (genlab.models.collapse)

    # ------------------------------------------------------------------ losses

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """WGAN-GP's penalty: E[(||grad_x D(x)|| - 1)^2] at random points x on the segments between real and fake
        clips. Kept differentiable (a double backward) when gradients are on; computed under no_grad too
        (validation), where only its value is wanted."""
        eps = torch.rand(len(real), 1, 1, device=real.device)
        mix = (eps * real.float() + (1 - eps) * fake.float()).detach().requires_grad_(True)
        keep = torch.is_grad_enabled()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.discriminator(mix, y).sum(), mix, create_graph=keep)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Discriminator loss from logits on real and fake batches (N,) each (WGAN-GP: without its penalty)."""
        if self.config.loss == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return fake.mean() - real.mean()

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Generator loss from D's logits on fakes (N,): -E[D(G(z))] for both losses."""
        return -fake.mean()

    def loss(self, batch: dict, phase: str | None = None) -> dict:
        """phase "d": D's loss on the real batch vs G(z).detach() (WGAN-GP: plus gp_weight x "gp"); "g": G's loss;
        None (validation): both, with "loss" = d_loss + g_loss. d_real/d_fake are the mean sigmoid of D's logits
        (they rise as D calls a batch real). Fakes reuse the batch's labels."""
        x, y, z = self.players_inputs(batch, phase)
        with torch.set_grad_enabled(torch.is_grad_enabled() and phase != "d"):  # D's phase needs no G graph
            fake = self.generator(z, y)
        out: dict[str, torch.Tensor] = {}
        if phase in ("d", None):
            out.update(self.d_terms(x, fake, y))
            if self.config.loss == "wgan-gp":
                out["gp"] = self.gradient_penalty(x, fake.detach(), y)
                out["d_loss"] = out["d_loss"] + self.config.gp_weight * out["gp"]
        if phase in ("g", None):
            out["g_loss"] = self.g_loss(self.discriminator(fake, y))
        out["loss"] = sum(out[k] for k in ("d_loss", "g_loss") if k in out)
        return out

    def watch_features(self, clips: torch.Tensor) -> torch.Tensor:
        """The collapse watch measures spread in magnitude spectra, not waveforms: the same sound at another
        phase is no new mode."""
        clips = clips.float()[:, 0]
        return torch.fft.rfft(clips).abs() / math.sqrt(clips.shape[1])

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """generator.onnx: z (batch, latent_dim) [, y (batch,)] -> waveform (batch, 1, length) in [-1, 1]."""
        return [decoder_graph("generator", self, output=("waveform", "float32", [BATCH, 1, self.config.length]))]

    def onnx_extras(self) -> dict:
        """The sampling prior: z ~ N(0, I) (truncation is the caller's), and the clips' sample rate."""
        return {**latent_prior(self.config.latent_dim), "waveform": {"sample_rate": self.config.sample_rate}}

    def use_onnx(self, graphs: dict[str, Runner]) -> None:
        """Generate on the exported graph (an instance attribute: shadows `decode` for this model only)."""
        self.decode = OnnxDecode(graphs["generator"], self.config.num_classes)
