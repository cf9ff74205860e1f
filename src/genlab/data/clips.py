"""Audio clips in memory: the dataset type and the preprocessing every audio source shares.

The bottom of genlab.data's audio side, as `images` is of its image side: `speech` (the synthesised
built-in) and `audio` (the readers, loading by name, augmentation) build on it. A clip becomes a mono
float32 waveform at the target rate: mixed down, its leading and trailing silence trimmed, resampled,
peak-normalised and centred in a fixed length.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.signal import resample_poly

from genlab.errors import DataError

SILENCE_DB = -40.0  # trimming keeps the span from the first to the last sample within this many dB of the peak
PEAK = 0.9          # every clip is scaled so that its largest absolute sample is this


@dataclass
class AudioDataset:
    waves: torch.Tensor                 # float32, (N, T), mono, values in [-1, 1], all clips the same length
    labels: torch.Tensor | None = None  # int64, (N,); None when the source has no labels
    classes: list[str] = field(default_factory=list)  # label names, index = label id
    sample_rate: int = 8000             # Hz
    name: str = ""                      # "spoken-digits", a folder path, ...
    source: str = ""                    # where the clips came from, for reports and model cards
    dropped: int = 0                    # files of the source that could not be read (see the reader's warning)

    def __post_init__(self):
        if self.waves.ndim != 2:
            raise DataError(f"{self.name}: waves must be (N, T), got shape {tuple(self.waves.shape)}")
        if self.labels is not None and len(self.labels) != len(self.waves):
            raise DataError(f"{self.name}: {len(self.labels)} labels for {len(self.waves)} clips; expected one each")

    def __len__(self) -> int:
        return len(self.waves)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.labels is not None else 0

    @property
    def seconds(self) -> float:
        """The length of every clip, in seconds."""
        return self.waves.shape[1] / self.sample_rate

    def subset(self, index: torch.Tensor) -> "AudioDataset":
        labels = self.labels[index] if self.labels is not None else None
        return AudioDataset(self.waves[index], labels, list(self.classes), self.sample_rate, self.name, self.source,
                            self.dropped)

    def fingerprint(self) -> str:
        """A short hash of the samples, labels and sample rate, used to key cached judges."""
        h = hashlib.sha256(self.waves.contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        h.update(str(self.sample_rate).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "count": len(self), "sample_rate": self.sample_rate,
                "seconds": self.seconds, "classes": list(self.classes), "dropped": self.dropped}


def clip_length(sample_rate: int, clip_seconds: float) -> int:
    """Samples per clip, after checking the two settings."""
    if not isinstance(sample_rate, int) or sample_rate < 1:
        raise DataError(f"data.sample_rate={sample_rate!r}; expected a positive whole number of Hz, e.g. 8000")
    if not (clip_seconds > 0 and math.isfinite(clip_seconds)):
        raise DataError(f"data.clip_seconds={clip_seconds!r}; expected a positive number of seconds, e.g. 1.0")
    length = round(sample_rate * clip_seconds)
    if length < 1:
        raise DataError(f"data.clip_seconds={clip_seconds} at data.sample_rate={sample_rate} holds no sample; "
                        "expected a clip of at least one sample")
    return length


def to_mono(data: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,) float32, the mean of the channels."""
    return (data.mean(axis=1) if data.ndim == 2 else data).astype(np.float32, copy=False)


def trim_silence(x: np.ndarray, silence_db: float = SILENCE_DB) -> np.ndarray:
    """The span from the first to the last sample whose magnitude is within `silence_db` of the peak
    (empty for an empty or all-zero clip)."""
    mag = np.abs(x)
    peak = mag.max(initial=0.0)
    if peak == 0:
        return x[:0]
    loud = np.flatnonzero(mag >= peak * 10 ** (silence_db / 20))
    return x[loud[0]:loud[-1] + 1]


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly, whose FIR filter removes what the target cannot hold)."""
    if rate == target:
        return x
    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32, copy=False)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Centre `x` in `length` samples: a longer clip loses equal parts at both ends, a shorter one is zero-padded."""
    if len(x) >= length:
        start = (len(x) - length) // 2
        return x[start:start + length]
    left = (length - len(x)) // 2
    return np.pad(x, (left, length - len(x) - left))


def prepare_clip(data: np.ndarray, rate: int, sample_rate: int, length: int) -> np.ndarray | None:
    """Decoded audio (frames[, channels]) at `rate` -> a (length,) float32 clip at `sample_rate`: mono, silence
    trimmed, resampled, peak-normalised to PEAK, centred; None when nothing in it is audible (empty or silent)."""
    x = trim_silence(to_mono(data))
    if not len(x):
        return None
    x = resample(x, rate, sample_rate)
    peak = np.abs(x).max(initial=0.0)
    if not len(x) or peak == 0:  # a clip of a few samples can resample to nothing
        return None
    return fit_length(x * (PEAK / peak), length).astype(np.float32, copy=False)
