"""`audio-ddpm`: the DDPM family (diffusion.py: its U-Net, DDPM and DDIM samplers, classifier-free guidance, `plan`,
CONTROLS) on log-mel spectrograms, turned back into waveforms by Griffin-Lim.

Why spectrograms and not waveforms: the U-Net and its samplers are reused unchanged, a 1 s clip at 8 kHz becomes a
64 x 64 image (8000 samples would need a deep 1-D network to cover one second of context), and the cost is a phase
that must be estimated at the end (data/audio_features.mel_to_wave), which Griffin-Lim does only approximately
(the round trip below).

The spectrogram, for a clip (B, 1, T) in [-1, 1]:
  - log-mel with n_fft 512 (64 ms window at 8 kHz) and n_mels bands; the hop (0 = derived) is T // (n_mels - 1),
    so that the 1 + T // hop centred frames are n_mels when T is a multiple of n_mels - 1, and at most about
    (n_mels - 1)^2 / T more otherwise (8000 samples: hop 126, exactly 64 frames). The frames are cropped at the end, or padded with silence,
    to n_mels: the U-Net's input is square, (B, 1, n_mels, n_mels);
  - mapped linearly from the fixed range [log_mel_min, log_mel_max] (config fields, not data statistics, so a
    model is rebuilt from its config alone) to [-1, 1] and clamped: silence (the log floor, -11.5) is -1 and a
    full-scale sine's peak (10.05 at n_fft 512) is +1.
`sample` denoises such an image, maps it back, pads the cropped frames with silence and inverts it with
`mel_to_wave` (griffin_lim_iters iterations of fast Griffin-Lim from a phase drawn from the sampling generator),
returning (n, 1, T) clamped to [-1, 1]. The log-mel -> waveform -> log-mel round trip of a 440 Hz tone and of a
100-3000 Hz chirp at these sizes is 1.7 and 1.2 dB of mean absolute error over an 80 dB range
(tests/test_audio_features.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from genlab.data.audio_features import fit_frames, from_unit, log_mel, mel_to_wave, to_unit
from genlab.errors import UsageError
from genlab.models.base import NoiseParts
from genlab.models.diffusion import DDPM


@dataclass
class AudioDDPMConfig:
    family: str = "audio-ddpm"
    sample_rate: int = 8000   # set from the data
    length: int = 8000        # set from the data: samples per clip (T)
    num_classes: int = 0      # set from the data when training with --conditional; 0 = unconditional
    n_fft: int = 512          # 64 ms at 8 kHz: Griffin-Lim's round trip was 1.7 dB on a tone, 3.2 dB with 256
    hop: int = 0              # 0: length // (n_mels - 1), so that the frames are n_mels (see the module docstring)
    n_mels: int = 64          # mel bands, and the side of the square spectrogram the U-Net denoises
    log_mel_min: float = -11.5   # log of silence (audio_features.LOG_FLOOR) -> -1
    log_mel_max: float = 10.0    # about a full-scale sine's peak at n_fft 512 -> +1
    griffin_lim_iters: int = 32  # phase iterations when sampling (fast Griffin-Lim; more barely helped at n_fft 512)
    # the U-Net and the diffusion process, as in diffusion.DDPMConfig
    width: int = 32
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [8])
    dropout: float = 0.0
    timesteps: int = 1000
    schedule: str = "cosine"
    prediction: str = "v"
    p_uncond: float = 0.1

    @property
    def in_channels(self) -> int:
        """The spectrogram is one channel (what DDPM reads)."""
        return 1

    @property
    def image_size(self) -> int:
        """The spectrogram's side (what DDPM reads): n_mels."""
        return self.n_mels

    @property
    def hop_length(self) -> int:
        """The hop in samples: `hop`, or length // (n_mels - 1) when hop is 0."""
        return self.hop or self.length // (self.n_mels - 1)

    @property
    def frames(self) -> int:
        """The log-mel's frames for a clip of `length` samples (before they are cropped or padded to n_mels)."""
        return 1 + self.length // self.hop_length


# Sized for 1 s clips at 8 kHz (64 x 64 spectrograms). Measured training throughput on one CPU core (shared machine):
# tiny 0.27 M parameters, 31-40 clips/s (its 1500 steps: about 20-25 min); small 2.3 M, 10 clips/s; base 5.0 M,
# 3 clips/s (long runs, or an accelerator).
PRESETS = {
    "tiny": {"model.width": 16, "model.channel_mults": [1, 2, 2], "model.num_res_blocks": 1,
             "model.attn_resolutions": [], "train.lr": 1e-3, "train.batch_size": 32, "train.steps": 1500,
             "train.warmup_steps": 100, "train.ema": 0.995},
    "small": {"model.width": 32, "model.channel_mults": [1, 2, 2, 2], "model.num_res_blocks": 2,
              "model.attn_resolutions": [8], "train.lr": 5e-4, "train.batch_size": 32, "train.steps": 6000,
              "train.warmup_steps": 200, "train.ema": 0.999},
    "base": {"model.width": 48, "model.channel_mults": [1, 2, 2, 2], "model.num_res_blocks": 2,
             "model.attn_resolutions": [8], "model.dropout": 0.1, "train.lr": 2e-4,
             "train.batch_size": 64, "train.steps": 30000, "train.warmup_steps": 500, "train.ema": 0.999},
}


class AudioDDPM(DDPM):
    """DDPM on normalised log-mel spectrograms (B, 1, n_mels, n_mels); clips in, clips out."""

    family = "audio-ddpm"

    def __init__(self, config: AudioDDPMConfig):
        c = config
        if c.n_mels < 8 or c.n_fft < 16 or c.length <= c.n_fft // 2 or c.sample_rate <= 0:
            raise UsageError(f"audio-ddpm needs n_mels >= 8, n_fft >= 16, sample_rate > 0 and clips longer than "
                             f"n_fft / 2; got n_mels={c.n_mels}, n_fft={c.n_fft}, sample_rate={c.sample_rate}, "
                             f"length={c.length}")
        if not 1 <= c.hop_length <= c.n_fft:
            raise UsageError(f"audio-ddpm's hop is {c.hop_length} samples (length {c.length} over n_mels "
                             f"{c.n_mels} frames) but n_fft is {c.n_fft}; expected 1 <= hop <= n_fft: raise n_fft or "
                             "n_mels, or set hop (the frames beyond n_mels are cropped)")
        if not c.log_mel_min < c.log_mel_max or c.griffin_lim_iters < 0:
            raise UsageError(f"audio-ddpm needs log_mel_min < log_mel_max and griffin_lim_iters >= 0; got "
                             f"{c.log_mel_min}, {c.log_mel_max}, {c.griffin_lim_iters}")
        super().__init__(config)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Clips (B, 1, T) in [-1, 1] -> normalised log-mels (B, 1, n_mels, n_mels) in [-1, 1]."""
        c = self.config
        mel = to_unit(log_mel(x, c.sample_rate, c.n_fft, c.hop_length, c.n_mels), c.log_mel_min, c.log_mel_max)
        return fit_frames(mel, c.n_mels, -1.0)[:, None]

    def waveform(self, spec: torch.Tensor, generator: torch.Generator | NoiseParts | None) -> torch.Tensor:
        """Normalised log-mels (B, 1, n_mels, n_mels) -> clips (B, 1, T) in [-1, 1]: the frames cropped by
        `spectrogram` come back as silence, and Griffin-Lim's initial phase is drawn from `generator` (a NoiseParts:
        each part's rows from its own generator, as each part's request alone would)."""
        c = self.config
        mel = from_unit(fit_frames(spec[:, 0].float(), c.frames, -1.0), c.log_mel_min, c.log_mel_max)
        parts = generator.parts if isinstance(generator, NoiseParts) else [(len(spec), generator)]
        rows = mel.split([n for n, _ in parts])
        waves = [mel_to_wave(m, c.sample_rate, c.n_fft, c.hop_length, c.length, c.griffin_lim_iters, g)
                 for m, (_, g) in zip(rows, parts)]
        return torch.cat(waves).clamp(-1, 1)[:, None]

    def loss(self, batch: dict) -> dict:
        """DDPM's L_simple on the normalised log-mel of the clips batch["x"] (B, 1, T)."""
        return super().loss({**batch, "x": self.spectrogram(batch["x"])})

    @torch.no_grad()
    def sample(self, n: int, *, cond=None, generator: torch.Generator | NoiseParts | None = None,
               steps: int | None = None, sampler: str = "ddim", eta: float = 0.0, guidance: float = 1.0,
               progress: bool = False, x_T: torch.Tensor | None = None,
               on_step: Callable[[int], None] | None = None, **controls) -> torch.Tensor:
        """n clips (n, 1, T) in [-1, 1]: DDPM.sample's spectrograms (same controls), then `waveform` with the same
        generator."""
        spec = super().sample(n, cond=cond, generator=generator, steps=steps, sampler=sampler, eta=eta,
                              guidance=guidance, progress=progress, x_T=x_T, on_step=on_step, **controls)
        return self.waveform(spec, generator)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_T (N, 1, n_mels, n_mels) -> clips (N, 1, T) by deterministic DDIM, Griffin-Lim from a fixed phase
        (seed 0), so that the clip is a function of x_T."""
        return self.waveform(super().decode(z, y), torch.Generator().manual_seed(0))

    def onnx_extras(self) -> dict:
        """DDPM's diffusion process, and the spectrogram a consumer turns the denoised image into a clip with."""
        c = self.config
        return {**super().onnx_extras(),
                "spectrogram": {"sample_rate": c.sample_rate, "length": c.length, "n_fft": c.n_fft,
                                "hop": c.hop_length, "n_mels": c.n_mels, "frames": c.frames,
                                "log_mel_range": [c.log_mel_min, c.log_mel_max],
                                "griffin_lim_iters": c.griffin_lim_iters,
                                "inverse": "genlab.data.audio_features.mel_to_wave (after from_unit and fit_frames)"}}
