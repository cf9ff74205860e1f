"""Log-mel spectrograms and their inverse, in torch only (no torchaudio, no librosa); `log_mel` is differentiable.

- `mel_filterbank`: triangular filters built as in Slaney's Auditory Toolbox (and librosa's `filters.mel`): each
  filter rises linearly in Hz from its left edge to its centre and falls linearly to its right edge, the edges
  n_mels + 2 points equally spaced on the HTK mel scale m = 2595 log10(1 + f / 700). The filters are
  peak-normalised (each reaches 1; no "slaney" area normalisation), so they are a partition of unity: at every
  frequency between the first and the last filter's centres the two filters around it sum to exactly 1.
- `log_mel`: the power STFT (periodic Hann window, centred frames with reflect padding: 1 + T // hop frames), the
  filterbank, then the natural log with a floor (LOG_FLOOR: the log of silence).
- `mel_to_wave`: the inverse: mel power -> linear power by non-negative least squares (`mel_power_to_linear`),
  its square root as the STFT magnitude, and a phase for it by fast Griffin-Lim (`griffin_lim`).
- `to_unit` / `from_unit` and `fit_frames`: a fixed log range mapped to [-1, 1] and the frames cropped or padded to
  a count, what a model on spectrogram "images" needs around these.
"""

from __future__ import annotations

import math

import torch

from genlab.errors import UsageError

LOG_FLOOR = 1e-5   # mel power below this is silence: log_mel's smallest value is log(1e-5) = -11.51
MOMENTUM = 0.99    # fast Griffin-Lim's (Perraudin et al. 2013: 0.99 is their recommended value)
NNLS_ITERS = 50    # multiplicative updates of the mel inversion (mel_power_to_linear)
TINY = 1e-12       # keeps the multiplicative updates' entries and divisors positive


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """The HTK mel scale (O'Shaughnessy 1987): 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) float32: row i weighs the one-sided STFT bins into mel band i (see the module's
    docstring: Slaney-style triangles on the HTK mel scale, peak 1, a partition of unity between the centres)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if sample_rate <= 0 or n_fft < 2 or n_mels < 1:
        raise UsageError(f"a mel filterbank needs sample_rate > 0, n_fft >= 2 and n_mels >= 1; got "
                         f"sample_rate={sample_rate}, n_fft={n_fft}, n_mels={n_mels}")
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise UsageError(f"mel band {fmin}..{fmax} Hz; expected 0 <= fmin < fmax <= sample_rate / 2 "
                         f"= {sample_rate / 2}")
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(float(hz_to_mel(torch.tensor(float(fmin)))), float(hz_to_mel(torch.tensor(float(fmax)))),
                          n_mels + 2, dtype=torch.float64)
    edges = mel_to_hz(mels)                       # left edge, centre, right edge of filter i: edges[i : i + 3]
    width = edges.diff()                          # (n_mels + 1,)
    offset = edges[:, None] - bins[None]          # (n_mels + 2, bins): edge minus bin frequency
    rising = -offset[:-2] / width[:-1, None]      # 0 at the left edge, 1 at the centre
    falling = offset[2:] / width[1:, None]        # 1 at the centre, 0 at the right edge
    return torch.minimum(rising, falling).clamp_min(0).float()


def _window(n_fft: int, like: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(n_fft, dtype=like.real.dtype, device=like.device)


def _as_rows(waves: torch.Tensor) -> torch.Tensor:
    """(B, T) or (B, 1, T) -> (B, T)."""
    if waves.dim() == 3 and waves.shape[1] == 1:
        return waves[:, 0]
    if waves.dim() != 2:
        raise UsageError(f"waveforms of shape {tuple(waves.shape)}; expected (batch, samples) or (batch, 1, samples)")
    return waves


def stft(waves: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(B, T) -> the complex one-sided STFT (B, n_fft // 2 + 1, 1 + T // hop): periodic Hann window, centred
    frames, reflect padding."""
    if not 1 <= hop <= n_fft:
        raise UsageError(f"hop={hop} with n_fft={n_fft}; expected 1 <= hop <= n_fft (frames that overlap or touch)")
    if waves.shape[-1] <= n_fft // 2:
        raise UsageError(f"clips of {waves.shape[-1]} samples are too short for n_fft={n_fft}; expected more than "
                         f"n_fft / 2 = {n_fft // 2} samples")
    return torch.stft(waves, n_fft, hop, window=_window(n_fft, waves), center=True, pad_mode="reflect",
                      return_complex=True)


def istft(spec: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """The inverse of `stft` (least-squares overlap-add), (B, F, frames) -> (B, length)."""
    return torch.istft(spec, n_fft, hop, window=_window(n_fft, spec), center=True, length=length)


def log_mel(waves: torch.Tensor, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> torch.Tensor:
    """Waveforms (B, T) or (B, 1, T) -> log-mel power spectrograms (B, n_mels, 1 + T // hop): natural log of the mel
    power, floored at LOG_FLOOR. Differentiable with respect to the waveforms."""
    spec = stft(_as_rows(waves).float(), n_fft, hop)
    power = spec.real ** 2 + spec.imag ** 2       # not abs() ** 2, whose gradient is NaN at 0
    fb = mel_filterbank(sample_rate, n_fft, n_mels).to(power.device)
    return torch.log((fb @ power).clamp_min(LOG_FLOOR))


def griffin_lim(magnitude: torch.Tensor, n_fft: int, hop: int, length: int, iters: int = 32,
                generator: torch.Generator | None = None, momentum: float = MOMENTUM) -> torch.Tensor:
    """A waveform (B, length) whose STFT magnitude approaches `magnitude` (B, n_fft // 2 + 1, frames).

    Fast Griffin-Lim (Perraudin, Balazs & Sondergaard 2013): from random phases drawn from `generator`, alternate
    the projection on the given magnitude with the projection on consistent spectrograms c_n = STFT(ISTFT(.)), and
    extrapolate t_n = c_n + momentum (c_n - c_{n-1}); momentum 0 is plain Griffin & Lim (1984)."""
    if iters < 0:
        raise UsageError(f"Griffin-Lim iters={iters}; expected iters >= 0")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    phase = torch.rand(magnitude.shape, generator=generator, device=gen_device).to(magnitude.device) * (2 * math.pi)
    t = torch.polar(magnitude, phase)
    previous = t
    for _ in range(iters):
        c = stft(istft(magnitude * torch.sgn(t), n_fft, hop, length), n_fft, hop)
        t, previous = c + momentum * (c - previous), c
    return istft(magnitude * torch.sgn(t), n_fft, hop, length)


def spectral_convergence(magnitude: torch.Tensor, waves: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|| magnitude - |STFT(waves)| ||_F / || magnitude ||_F per clip, (B,): how far Griffin-Lim's output is from
    the magnitude it was asked for (0 = a consistent spectrogram reached exactly)."""
    got = stft(_as_rows(waves).float(), n_fft, hop).abs()
    return (magnitude - got).flatten(1).norm(dim=1) / magnitude.flatten(1).norm(dim=1)


def mel_power_to_linear(mel_power: torch.Tensor, fb: torch.Tensor, iters: int = NNLS_ITERS) -> torch.Tensor:
    """Mel power (B, n_mels, frames) -> a non-negative linear power (B, F, frames) whose mel power fb @ S matches:
    non-negative least squares min ||fb S - mel_power|| by Lee & Seung's (2001) multiplicative updates
    S <- S (fb^T M) / (fb^T fb S), started from the pseudo-inverse's answer clamped at 0. The clamped pseudo-inverse
    alone is 8-11 dB off in log-mel on a tone or a chirp (its negative lobes, zeroed, add power); 50 updates bring
    that under 1 dB."""
    s = (torch.linalg.pinv(fb) @ mel_power).clamp_min(TINY)
    target = fb.T @ mel_power
    for _ in range(iters):
        s = s * target / (fb.T @ (fb @ s)).clamp_min(TINY)
    return s


def mel_to_wave(log_mels: torch.Tensor, sample_rate: int, n_fft: int, hop: int, length: int, iters: int = 32,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Log-mel spectrograms (B, n_mels, frames) as `log_mel` makes them -> waveforms (B, length): the linear power
    by `mel_power_to_linear`, then `griffin_lim` gives its square root a phase (`iters` iterations, the initial
    phase from `generator`)."""
    fb = mel_filterbank(sample_rate, n_fft, log_mels.shape[1]).to(log_mels.device)
    power = mel_power_to_linear(log_mels.float().exp(), fb)
    return griffin_lim(power.sqrt(), n_fft, hop, length, iters, generator)


def to_unit(log_mels: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Log-mels mapped linearly from [lo, hi] to [-1, 1], clamped there."""
    return ((log_mels - lo) / (hi - lo) * 2 - 1).clamp(-1, 1)


def from_unit(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The inverse of `to_unit` on [-1, 1]."""
    return (x.clamp(-1, 1) + 1) / 2 * (hi - lo) + lo


def fit_frames(spec: torch.Tensor, frames: int, fill: float) -> torch.Tensor:
    """(..., frames') -> (..., frames): the last frames cropped, or frames of value `fill` appended."""
    have = spec.shape[-1]
    if have >= frames:
        return spec[..., :frames]
    return torch.cat([spec, spec.new_full((*spec.shape[:-1], frames - have), fill)], dim=-1)
