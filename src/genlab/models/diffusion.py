"""DDPM diffusion (Ho et al. 2020) with DDIM sampling (Song et al. 2020) and classifier-free guidance.

Three parts, read top to bottom:
  - noise schedules: `linear_beta_schedule` (Ho et al.) and `cosine_beta_schedule` (Nichol & Dhariwal 2021);
  - `GaussianDiffusion`, the process: buffers only (no parameters), the forward marginal `q_sample`,
    the eps / v parameterisations, the posterior q(x_{t-1} | x_t, x_0) and the DDPM and DDIM samplers.
    It drives any `model_fn(x_t, t) -> output`, so it knows nothing about the network;
  - `DDPMConfig` and `DDPM`, the family: the U-Net (unet.py) plus the process, `loss` and `sample`.

Timesteps are 0-based: index t in 0..T-1 is the paper's step t+1, so x at index t has had t+1
noising steps and alpha_bar[t] = prod_{s<=t} (1 - beta_s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F
from rich.progress import track
from torch import nn

from genlab.errors import ControlError, UnsupportedError, UsageError
from genlab.models.base import GenerativeModel, as_labels, randn as _randn
from genlab.models.controls import Control, check
from genlab.models.graphs import BATCH, Graph, Runner, Spec, random_labels
from genlab.models.unet import UNet

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
SAMPLERS = ("ddim", "ddpm", "dpm++")
MAX_BETA = 0.999  # as in improved DDPM: a beta of 1 would make alpha_bar exactly 0 and x_0 unrecoverable


def linear_beta_schedule(T: int) -> torch.Tensor:
    """Ho et al. 2020: beta linear from 1e-4 to 0.02 for T = 1000, scaled by 1000 / T for other T
    (improved DDPM) so the total noise stays comparable. (T,) float64."""
    scale = 1000 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64).clamp(max=MAX_BETA)


def cosine_beta_schedule(T: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2).
    It destroys information more slowly than the linear schedule, which matters for small images. (T,) float64."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


class GaussianDiffusion(nn.Module):
    """The forward process q(x_t | x_0) and its reverse samplers for a beta schedule. Buffers only."""

    def __init__(self, betas: torch.Tensor, prediction: str = "eps"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise UsageError(f"prediction={prediction!r}; expected one of {', '.join(PREDICTIONS)}")
        self.prediction = prediction
        betas = betas.double()
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            # Posterior q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta_tilde_t), Ho et al. eq. 6-7.
            "posterior_variance": betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod),
            "posterior_mean_coef2": (1 - alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - alphas_cumprod),
        }
        # Computed in float64, stored in float32 (MPS has no float64). Not persistent: they follow from the
        # config, so the run folder holds only learned weights.
        self._alphas_cumprod64 = alphas_cumprod  # CPU float64 copy for the samplers' scalar coefficients
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @staticmethod
    def _at(buf: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """buf[t] shaped to broadcast against x: (N,) -> (N, 1, 1, 1)."""
        return buf[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))

    def _signal_noise(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)), each (N, 1, 1, 1): x_t = signal * x_0 + noise * eps."""
        return self._at(self.sqrt_alphas_cumprod, t, x), self._at(self.sqrt_one_minus_alphas_cumprod, t, x)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) in closed form (Ho et al. eq. 4)."""
        a, s = self._signal_noise(t, x0)
        return a * x0 + s * noise

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Velocity v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022, section 4)."""
        a, s = self._signal_noise(t, x0)
        return a * noise - s * x0

    def training_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network regresses: eps itself, or v."""
        return noise if self.prediction == "eps" else self.v_target(x0, t, noise)

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a, s = self._signal_noise(t, x_t)
        return (x_t - s * eps) / a

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        a, s = self._signal_noise(t, x_t)
        return (x_t - a * x0) / s

    def predict_x0_eps(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                       clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output (eps or v) -> (x_0, eps). With clip, x_0 is clamped to [-1, 1] and eps recomputed
        from the clamped x_0 (as guided-diffusion's DDIM does), so both samplers see one consistent pair."""
        a, s = self._signal_noise(t, x_t)
        if self.prediction == "eps":
            x0, eps = self.predict_x0_from_eps(x_t, t, output), output
        else:  # x_0 = sqrt(abar) x_t - sqrt(1 - abar) v,  eps = sqrt(1 - abar) x_t + sqrt(abar) v
            x0, eps = a * x_t - s * output, s * x_t + a * output
        if not clip:
            return x0, eps
        x0 = x0.clamp(-1, 1)
        return x0, self.predict_eps_from_x0(x_t, t, x0)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6-7)."""
        mean = self._at(self.posterior_mean_coef1, t, x_t) * x0 + self._at(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._at(self.posterior_variance, t, x_t)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps from T-1 down to 0, evenly spaced (all of them when steps == T)."""
        T = self.num_timesteps
        if not 1 <= steps <= T:
            raise UsageError(f"steps={steps}; DDIM needs 1 <= steps <= T={T}")
        return [int(s) for s in torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long()]

    def lambda_timesteps(self, steps: int) -> list[int]:
        """`steps` distinct timesteps from T-1 down to 0, evenly spaced in log-SNR lambda = log(alpha / sigma)
        (each the nearest discrete one): the spacing DPM-Solver recommends for low-resolution pixel data, where
        a time-uniform grid leaves the last step, the one into the clean image, far too long."""
        T = self.num_timesteps
        if not 1 <= steps <= T:
            raise UsageError(f"steps={steps}; DPM-Solver++ needs 1 <= steps <= T={T}")
        abar = self._alphas_cumprod64
        lam = 0.5 * torch.log(abar / (1 - abar))   # increasing as t decreases
        # the grid starts at T-1 but spaces the rest from T-2: the cosine schedule's clipped last beta puts
        # lambda(T-1) far below lambda(T-2), and an even grid from there would spend steps on pure noise
        targets = (torch.linspace(float(lam[-2]), float(lam[0]), steps - 1, dtype=torch.float64) if steps > 2
                   else [float(lam[0])] * (steps - 1))
        ts = [T - 1] + [int(torch.argmin((lam - v).abs())) for v in targets]
        for i in range(1, steps):                 # strictly decreasing, and room left for the steps after
            ts[i] = min(ts[i], ts[i - 1] - 1)
        for i in range(steps - 1, -1, -1):
            ts[i] = max(ts[i], steps - 1 - i) if i == steps - 1 or ts[i] > ts[i + 1] else ts[i + 1] + 1
        return ts

    def _denoise(self, model_fn: Callable, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sampler's step: the network at timestep t for the whole batch -> the clipped (x_0, eps)."""
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        return self.predict_x0_eps(model_fn(x, tt).float(), x, tt)

    def ddim_sigma(self, t: int, t_prev: int, eta: float) -> float:
        """sigma_t of Song et al. eq. 16: eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).
        For eta = 1 and t_prev = t - 1 this is the DDPM posterior variance beta_tilde_t (squared)."""
        abar = self._alphas_cumprod64
        a_t, a_prev = abar[t], (abar[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64))
        return float(eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt())

    @torch.no_grad()
    def ddim_sample(self, model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple, *,
                    steps: int = 50, eta: float = 0.0, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu", x_T: torch.Tensor | None = None,
                    progress: bool = False, on_step: Callable[[int], None] | None = None,
                    timesteps: list[int] | None = None) -> torch.Tensor:
        """DDIM (Song et al. 2020, eq. 12) over a subsequence of `steps` timesteps (or the given `timesteps`):
        x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z.
        eta = 0 is deterministic given x_T; eta = 1 with steps = T is DDPM's ancestral sampler.
        `on_step(i)` is called before step i (progress, or a server abandoning the work by raising)."""
        if eta < 0:
            raise UsageError(f"eta={eta}; expected eta >= 0 (0 = deterministic DDIM, 1 = DDPM-like)")
        x = _randn(shape, generator, device) if x_T is None else x_T.to(device, torch.float32)
        ts = self.ddim_timesteps(steps) if timesteps is None else timesteps
        abar = self._alphas_cumprod64
        for i in _steps(range(len(ts)), progress, "DDIM"):
            if on_step is not None:
                on_step(i)
            t, t_prev = ts[i], (ts[i + 1] if i + 1 < len(ts) else -1)
            x0, eps = self._denoise(model_fn, x, t)
            a_prev = float(abar[t_prev]) if t_prev >= 0 else 1.0
            sigma = self.ddim_sigma(t, t_prev, eta)
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * _randn(shape, generator, x.device)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def dpm_solver_sample(self, model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple, *,
                          steps: int = 20, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu", x_T: torch.Tensor | None = None,
                          progress: bool = False, order: int = 2,
                          on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", algorithm 2): the probability-flow ODE solved in
        lambda = log(alpha / sigma) with the data prediction x_0, multistep second order. With h = lambda_next
        - lambda_t and r = h_prev / h, D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev, and
        x_next = (sigma_next / sigma_t) x - alpha_next (exp(-h) - 1) D.
        The first step and the last (to the clean image, where sigma is 0) are first order, which is DDIM with
        eta 0 exactly; so is `order=1` throughout. Timesteps evenly spaced in lambda (`lambda_timesteps`);
        deterministic given x_T."""
        if order not in (1, 2):
            raise UsageError(f"order={order}; DPM-Solver++ here is of order 1 or 2")
        x = _randn(shape, generator, device) if x_T is None else x_T.to(device, torch.float32)
        ts = self.lambda_timesteps(steps)
        abar = self._alphas_cumprod64

        def alpha_sigma_lambda(t: int) -> tuple[float, float, float]:
            a = float(abar[t]) if t >= 0 else 1.0
            alpha, sigma = math.sqrt(a), math.sqrt(1 - a)
            return alpha, sigma, (math.log(alpha / sigma) if sigma > 0 else math.inf)

        x0_prev, h_prev = None, None
        for i in _steps(range(len(ts)), progress, "DPM-Solver++"):
            if on_step is not None:
                on_step(i)
            t, t_next = ts[i], (ts[i + 1] if i + 1 < len(ts) else -1)
            x0, _ = self._denoise(model_fn, x, t)
            _, sigma_t, lam_t = alpha_sigma_lambda(t)
            alpha_n, sigma_n, lam_n = alpha_sigma_lambda(t_next)
            if t_next < 0:  # sigma_next = 0: the step lands on x_0 itself
                x = x0
                break
            h = lam_n - lam_t
            d = x0
            if order == 2 and x0_prev is not None:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = (sigma_n / sigma_t) * x - alpha_n * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        return x.clamp(-1, 1)

    @torch.no_grad()
    def ddpm_sample(self, model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple, *,
                    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                    x_T: torch.Tensor | None = None, progress: bool = False,
                    on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        """Ancestral sampling over all T steps (Ho et al. algorithm 2, with the posterior variance
        beta_tilde_t and the mean from the clipped x_0 prediction). `on_step(i)` is called before
        each step (as in `ddim_sample`); it may raise to abandon the sampling."""
        x = _randn(shape, generator, device) if x_T is None else x_T.to(device, torch.float32)
        for i, t in enumerate(_steps(range(self.num_timesteps - 1, -1, -1), progress, "DDPM")):
            if on_step is not None:
                on_step(i)
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            x0, _ = self.predict_x0_eps(model_fn(x, tt).float(), x, tt)
            mean, var = self.q_posterior(x0, x, tt)
            x = mean + var.sqrt() * _randn(shape, generator, x.device) if t > 0 else mean
        return x.clamp(-1, 1)


def _steps(it, progress: bool, name: str):
    """Iterate, with a transient rich progress bar over denoising steps when asked."""
    return track(it, description=f"{name} sampling", transient=True) if progress else it


def guided(output_cond: torch.Tensor, output_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): uncond + w (cond - uncond); w = 1 is the conditional model.
    Applied to the raw output (eps or v): given x_t, eps is affine in v and the weights 1 - w and w sum to one,
    so guiding v guides eps identically."""
    return output_uncond + guidance * (output_cond - output_uncond)


@dataclass
class DDPMConfig:
    family: str = "ddpm"
    in_channels: int = 1      # set from the data
    image_size: int = 8       # set from the data
    num_classes: int = 0      # set from the data when training with --conditional; 0 = unconditional
    width: int = 32           # U-Net channels at full resolution; multiple of 8
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])  # width multiplier per level
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [8])     # map sizes with self-attention
    dropout: float = 0.0
    timesteps: int = 1000     # T
    schedule: str = "cosine"  # cosine | linear; cosine keeps more signal at mid t, better for small images
    prediction: str = "v"     # v | eps; v (Salimans & Ho 2022) gave closer-to-data digits than eps at equal steps
    p_uncond: float = 0.1     # label -> null label with this probability in training (conditional models)


# Presets set model size and training length together; `--set` overrides any key afterwards.
PRESETS = {
    "tiny": {"model.width": 16, "model.channel_mults": [1, 2], "model.num_res_blocks": 1,
             "model.attn_resolutions": [], "train.lr": 1e-3, "train.batch_size": 64, "train.steps": 1500,
             "train.warmup_steps": 100, "train.ema": 0.995},
    "small": {"model.width": 32, "model.channel_mults": [1, 2, 2], "model.num_res_blocks": 2,
              "model.attn_resolutions": [8], "train.lr": 5e-4, "train.batch_size": 64, "train.steps": 6000,
              "train.warmup_steps": 200, "train.ema": 0.999},
    "base": {"model.width": 64, "model.channel_mults": [1, 2, 2, 2], "model.num_res_blocks": 2,
             "model.attn_resolutions": [16, 8], "model.dropout": 0.1, "train.lr": 2e-4,
             "train.batch_size": 128, "train.steps": 30000, "train.warmup_steps": 500, "train.ema": 0.999},
}


class DDPM(GenerativeModel):
    """Denoising diffusion: a U-Net trained on the simple loss ||eps - eps_theta(x_t, t)||^2, sampled by
    DDIM (default, 50 steps) or DDPM ancestral sampling, with classifier-free guidance when conditional."""

    family = "ddpm"
    ADAPTER_TARGETS = (nn.Linear, nn.Conv2d)  # the U-Net's attention and convolutions, as diffusers' LoRA
    CONTROLS = (Control("steps", int, 50, 1, None, help="denoising steps, at most the model's timesteps"),
                Control("sampler", str, "ddim", choices=SAMPLERS,
                        help="ddim; dpm++ (DPM-Solver++(2M): DDIM-50's quality in about 20 steps); ddpm: ancestral "
                             "over all T steps"),
                Control("eta", float, 0.0, 0.0, 1.0, help="DDIM noise, 0 = deterministic"),
                Control("guidance", float, 1.0, 0.0, 20.0, help="classifier-free guidance scale, class-conditional models"))

    def __init__(self, config: DDPMConfig):
        c = config
        if c.schedule not in SCHEDULES:
            raise UsageError(f"model.schedule={c.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        if c.prediction not in PREDICTIONS:
            raise UsageError(f"model.prediction={c.prediction!r}; expected one of {', '.join(PREDICTIONS)}")
        if c.timesteps < 2:
            raise UsageError(f"model.timesteps={c.timesteps}; expected at least 2 (1000 is usual)")
        if not 0 <= c.p_uncond < 1:
            raise UsageError(f"model.p_uncond={c.p_uncond}; expected a probability in [0, 1)")
        super().__init__(config)
        self.unet = self.build_unet(c)
        betas = (cosine_beta_schedule if c.schedule == "cosine" else linear_beta_schedule)(c.timesteps)
        self.diffusion = GaussianDiffusion(betas, c.prediction)

    @staticmethod
    def build_unet(c) -> nn.Module:
        """The denoising network for config c (the video family builds its space-time U-Net here)."""
        return UNet(c.in_channels, c.image_size, c.width, c.channel_mults, c.num_res_blocks, c.attn_resolutions,
                    c.dropout, c.num_classes)

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    def item_shape(self) -> tuple[int, ...]:
        """The shape of one sample, as the U-Net denoises it: (C, H, W)."""
        c = self.config
        return (c.in_channels, c.image_size, c.image_size)

    def controls(self) -> dict[str, Control]:
        """steps up to T (default 50 or T if fewer); guidance only on a class-conditional model."""
        T = self.config.timesteps
        out = super().controls()
        out["steps"] = replace(out["steps"], default=min(50, T), max=T)
        if not self.config.num_classes:
            del out["guidance"]
        return out

    def drop_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Replace each label by the null label (num_classes) with probability p_uncond, so one network
        learns both the conditional and the unconditional model (Ho & Salimans 2022, algorithm 1)."""
        drop = torch.rand(y.shape, device=y.device) < self.config.p_uncond
        return torch.where(drop, torch.full_like(y, self.config.num_classes), y)

    def loss(self, batch: dict) -> dict:
        """L_simple (Ho et al. eq. 14): t ~ U{0..T-1}, eps ~ N(0, I), MSE between the target and the output."""
        x = batch["x"]
        y = batch.get("y") if self.config.num_classes > 0 else None
        if self.config.num_classes > 0:
            if y is None:
                raise UsageError("this DDPM is class-conditional (num_classes > 0) but the batch has no labels")
            if self.training:
                y = self.drop_labels(y)
        t = torch.randint(0, self.diffusion.num_timesteps, (x.shape[0],), device=x.device)
        noise = torch.randn_like(x)
        x_t = self.diffusion.q_sample(x, t, noise)
        mse = F.mse_loss(self.unet(x_t, t, y).float(), self.diffusion.training_target(x, t, noise).float())
        return {"loss": mse, "mse": mse.detach()}

    def guided_output(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                      guidance: float) -> torch.Tensor:
        """Network output with classifier-free guidance; one batched forward of size 2N when guidance != 1."""
        if y is None or guidance == 1:
            return self.denoiser(x_t, t, y)
        null = torch.full_like(y, self.config.num_classes)
        out = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        return guided(cond, uncond, guidance)

    def denoiser(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The network as the samplers call it (a family may split large batches: video-ddpm)."""
        return self.unet(x_t, t, y)

    @torch.no_grad()
    def sample(self, n: int, *, cond=None, generator: torch.Generator | None = None, steps: int | None = None,
               sampler: str = "ddim", eta: float = 0.0, guidance: float = 1.0, progress: bool = False,
               x_T: torch.Tensor | None = None, on_step: Callable[[int], None] | None = None,
               **controls) -> torch.Tensor:
        """n images in [-1, 1], (n, C, H, W).

        cond: a label or one per sample (conditional models; None samples unconditionally via the null label).
        sampler: "ddim" (steps default 50, eta 0 = deterministic), "dpm++" (DPM-Solver++(2M), steps default 20)
        or "ddpm" (ancestral, always all T steps).
        guidance: classifier-free guidance scale w (1 = plain conditional; needs a label). x_T: start noise.
        """
        if controls:
            raise UnsupportedError(f"ddpm.sample got unknown controls {', '.join(controls)}; valid: steps, sampler, eta, "
                            f"guidance, progress, x_T, on_step")
        plan = self.plan(steps=steps, sampler=sampler, eta=eta, guidance=guidance, labelled=cond is not None)
        y = as_labels(cond, n, self.config.num_classes, self.device)
        model_fn = lambda x, t: self.guided_output(x, t, y, plan["guidance"])  # noqa: E731
        return self.run_sampler(plan, model_fn, n, generator=generator, x_T=x_T, progress=progress, on_step=on_step)

    def run_sampler(self, plan: dict, model_fn: Callable, n: int, *, generator, x_T: torch.Tensor | None,
                    progress: bool, on_step: Callable[[int], None] | None) -> torch.Tensor:
        """n samples by the planned sampler around `model_fn(x_t, t) -> output`."""
        shape = (n, *self.item_shape())
        if plan["sampler"] == "ddpm":
            return self.diffusion.ddpm_sample(model_fn, shape, generator=generator, device=self.device,
                                              x_T=x_T, progress=progress, on_step=on_step)
        if plan["sampler"] == "dpm++":
            return self.diffusion.dpm_solver_sample(model_fn, shape, steps=plan["steps"], generator=generator,
                                                    device=self.device, x_T=x_T, progress=progress, on_step=on_step)
        return self.diffusion.ddim_sample(model_fn, shape, steps=plan["steps"], eta=plan["eta"],
                                          generator=generator, device=self.device, x_T=x_T, progress=progress,
                                          on_step=on_step)

    def plan(self, *, steps: int | None = None, sampler: str = "ddim", eta: float = 0.0, guidance: float = 1.0,
             labelled: bool = False) -> dict:
        """The sampling controls checked and resolved (steps filled in): {steps, sampler, eta, guidance}.
        Raises ControlError naming the control at fault."""
        T = self.diffusion.num_timesteps
        if guidance != 1:
            if self.config.num_classes == 0:
                raise ControlError("guidance", f"guidance={guidance} needs a class-conditional model; this one was "
                                               "trained without labels (use guidance=1 or train with --conditional)")
            if not labelled:
                raise ControlError("guidance", f"guidance={guidance} needs a label to guide towards; pass cond=...")
        controls = self.controls()  # an unconditional model has no guidance (checked above: it must be 1)
        given = {"steps": steps, "sampler": sampler, "eta": eta, "guidance": guidance}
        check(controls, **{k: v for k, v in given.items() if k in controls})
        if sampler == "ddpm":
            if steps is not None and steps != T:
                raise ControlError("steps", f"the ddpm sampler always runs all T={T} steps (got steps={steps}); "
                                            "use sampler='ddim' for fewer steps")
            if eta != 0.0:
                raise ControlError("eta", "eta is a DDIM control; the ddpm sampler's noise is fixed (it equals "
                                          "ddim with eta=1)")
            return {"steps": T, "sampler": sampler, "eta": 0.0, "guidance": guidance}
        if sampler == "dpm++" and eta != 0.0:
            raise ControlError("eta", "eta is a DDIM control; DPM-Solver++ solves the deterministic ODE")
        steps = (20 if sampler == "dpm++" else controls["steps"].default) if steps is None else steps
        return {"steps": steps, "sampler": sampler, "eta": eta, "guidance": guidance}

    # Used by `genlab interpolate`: DDIM with eta = 0 is a deterministic map from x_T to an image.
    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n starting noises x_T, (n, C, H, W)."""
        return _randn((n, *self.item_shape()), generator, self.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_T (N, C, H, W) -> images in [-1, 1] by deterministic DDIM (50 steps, eta = 0)."""
        return self.diffusion.ddim_sample(lambda x, t: self.unet(x, t, y), tuple(z.shape), x_T=z,
                                          steps=min(50, self.diffusion.num_timesteps), device=self.device)

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """unet.onnx: one network evaluation x_t (batch, C, H, W), t (batch,) [, y (batch,)] -> output
        (batch, C, H, W), eps or v as config.prediction says; y = num_classes is the null label."""
        c = self.config
        k, shape, in_shape = c.num_classes, list(self.item_shape()), list(self.unet_input_shape())
        ins: list[Spec] = [("x_t", "float32", [BATCH, *in_shape]), ("t", "int64", [BATCH])]
        ins += [("y", "int64", [BATCH])] if k else []

        def example(b: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
            x, t = torch.randn(b, *in_shape, generator=g), torch.randint(c.timesteps, (b,), generator=g)
            return (x, t) + ((random_labels(k + 1, b, g),) if k else ())   # k + 1: the null label too
        return [Graph("unet", _UNetStep(self.unet), ins, [("output", "float32", [BATCH, *shape])], example)]

    def unet_input_shape(self) -> tuple[int, ...]:
        """What the U-Net takes per sample: x_t's shape (the video family adds its conditioning channels)."""
        return self.item_shape()

    def onnx_extras(self) -> dict:
        """The diffusion process a consumer runs around the U-Net."""
        c = self.config
        return {"diffusion": {"timesteps": c.timesteps, "schedule": c.schedule, "prediction": c.prediction,
                              "null_label": c.num_classes if c.num_classes else None,
                              "sampler": "genlab.models.diffusion.GaussianDiffusion (ddim_sample / ddpm_sample)"}}

    def use_onnx(self, graphs: dict[str, Runner]) -> None:
        """Evaluate the U-Net on the exported graph: sampling, its loops and guidance run unchanged around it."""
        self.unet = OnnxUNet(graphs["unet"], self.config.num_classes)


class _UNetStep(nn.Module):
    """The exported network: one U-Net evaluation (x_t, t[, y]) -> eps or v."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x_t, t, y)


class _DeviceProbe(nn.Module):
    """DDPM.device reads `unet.conv_in.weight.device`; the exported U-Net answers "cpu"."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.empty(0), persistent=False)


class OnnxUNet(nn.Module):
    """Stands in for the DDPM U-Net: (x_t, t, y=None) -> output on an exported graph (`graph`: a runner,
    (*tensors) -> tuple of CPU tensors), so DDPM.sample's DDIM and DDPM loops and classifier-free guidance
    run unchanged around it."""

    def __init__(self, graph: Runner, num_classes: int):
        super().__init__()
        self.graph, self.num_classes = graph, num_classes
        self.conv_in = _DeviceProbe()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long) if y is None else y
            return self.graph(x, t, y)[0].to(x.device)
        if y is not None:
            raise UsageError("this U-Net was built without classes (num_classes=0); pass y=None")
        return self.graph(x, t)[0].to(x.device)
