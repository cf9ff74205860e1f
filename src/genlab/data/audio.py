"""Audio data: loading by name (built-ins and folders of recordings), the readers, and augmentation.

`load_audio(cfg)` reads what `cfg.name` names:

    spoken-digits   the ten digit words synthesised with espeak-ng (genlab.data.speech), data.count clips
    fsdd            the Free Spoken Digit Dataset's recordings (`genlab data fetch fsdd`), label = leading digit
    a folder        WAV/FLAC/OGG files: one sub-folder per class gives labels, files at the top level only: unlabelled

Every clip goes through genlab.data.clips.prepare_clip (mono, silence trimmed, resampled to data.sample_rate,
peak-normalised, centred in data.clip_seconds). A file that is not audio, has a damaged header or holds no
audible sample is dropped and counted; one whose header declares more samples than data.memory_budget_gb
allows (a 10-hour or 64-channel file) is refused before it is read. `augment` draws the training-time
augmentations (time shift, gain, noise, speed) from a torch.Generator.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from genlab.config import DataConfig
from genlab.data.clips import AudioDataset, clip_length, prepare_clip
from genlab.data.fetch import dataset_dir
from genlab.data.folders import files_under, folder_classes, folder_labels
from genlab.data.images import check_memory
from genlab.data.speech import WORDS, spoken_digits
from genlab.errors import DataError

__all__ = ["AUDIO_BUILTINS", "AudioDataset", "augment", "load_audio", "read_audio_folder", "read_fsdd"]

log = logging.getLogger("genlab.data")

AUDIO_BUILTINS = {
    "spoken-digits": "the ten English digit words synthesised offline by espeak-ng over voices, variants, rates and "
                     "pitches: data.count clips (default 6000), 10 balanced classes, seeded, cached; no download",
    "fsdd": "Free Spoken Digit Dataset v1.0.9: 2500 recorded English digits, 5 speakers, 8 kHz, 10 classes "
            "(genlab data fetch fsdd)",
}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
PATH_KINDS = ("a folder of WAV/FLAC/OGG files (one sub-folder per class for labels; files at the top level only "
              "for unlabelled clips)")
# Memory per sample of a file while it is read: the decoded float32 frames, their mono mix and its resampled copy
# (budgeted at the decoded size each, for resampling to at most the file's own rate; more is rare for speech).
READ_BYTES = 3 * 4
SHOWN_DROPS = 3     # the warning about dropped files names this many of them
FSDD_NAME = re.compile(r"(\d)_[^_]+_\d+\.wav")   # recordings/{digit}_{speaker}_{index}.wav


def load_audio(cfg: DataConfig) -> AudioDataset:
    """The clips `cfg.name` names (a built-in, see AUDIO_BUILTINS, or a folder), (N, T) in [-1, 1], all
    `cfg.clip_seconds` long at `cfg.sample_rate`."""
    length = clip_length(cfg.sample_rate, cfg.clip_seconds)
    if not cfg.memory_budget_gb > 0:
        raise DataError(f"data.memory_budget_gb={cfg.memory_budget_gb}; expected a positive number of GB")
    path = Path(cfg.name).expanduser()
    try:
        if cfg.name == "spoken-digits":
            check_memory(cfg.count * length * (2 + 4), cfg.memory_budget_gb, "spoken-digits",
                         f"data.count={cfg.count} clips of {length} samples (int16 cache, float32 clips)")
            ds = spoken_digits(cfg.count, cfg.sample_rate, cfg.clip_seconds, cfg.seed)
        elif cfg.name == "fsdd":
            ds = read_fsdd(dataset_dir("fsdd"), cfg.sample_rate, length, cfg.memory_budget_gb)
        elif cfg.name and path.is_dir():
            ds = read_audio_folder(path, cfg.sample_rate, length, cfg.memory_budget_gb)
        else:
            raise DataError(f"unknown audio dataset {cfg.name!r}: not a built-in name and no such folder. Expected "
                            f"a built-in ({', '.join(AUDIO_BUILTINS)}) or {PATH_KINDS}")
    except MemoryError as e:  # the headers fit the budget, but the machine had less memory free
        raise DataError(f"{cfg.name}: ran out of memory loading these clips; expected data that fits in free memory: "
                        "use fewer or shorter clips, or lower data.memory_budget_gb to refuse it up front") from e
    if cfg.conditional and ds.labels is None:
        raise DataError(f"{ds.source or ds.name}: data.conditional=true but these clips have no labels; put each "
                        "class's recordings in a sub-folder of its own, or train unconditionally")
    return ds


# ---------------------------------------------------------------------------------------------
# Readers

def read_audio_folder(folder: Path, sample_rate: int, length: int, budget_gb: float) -> AudioDataset:
    """WAV/FLAC/OGG files under `folder` (recursively, hidden ones skipped); top-level sub-folder names become
    classes. A flat folder gives unlabelled clips; a folder with both is an error."""
    files = files_under(folder, AUDIO_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no WAV, FLAC or OGG files found (searched sub-folders too); expected {PATH_KINDS}")
    classes = folder_classes(folder, files, "audio files", "unlabelled clips")
    labels = folder_labels(folder, files, classes) if classes else None
    return _read_files(files, labels, classes, str(folder), str(folder.resolve()), sample_rate, length, budget_gb)


def read_fsdd(folder: Path, sample_rate: int, length: int, budget_gb: float) -> AudioDataset:
    """The Free Spoken Digit Dataset as `genlab data fetch fsdd` unpacks it: recordings/{digit}_{speaker}_{index}.wav,
    labelled by the leading digit."""
    if not (folder / "recordings").is_dir():
        raise DataError(f"fsdd is not downloaded yet (looked in {folder}); run `genlab data fetch fsdd` first, or set "
                        "GENLAB_CACHE to the cache that holds it")
    files = sorted((folder / "recordings").glob("*.wav"))
    labels = []
    for f in files:
        match = FSDD_NAME.fullmatch(f.name)
        if match is None:
            raise DataError(f"{f}: not an FSDD file name; expected recordings/{{digit}}_{{speaker}}_{{index}}.wav")
        labels.append(int(match.group(1)))
    if not files:
        raise DataError(f"{folder / 'recordings'}: no recordings; expected the FSDD's {{digit}}_{{speaker}}_{{index}}"
                        ".wav files (delete the folder and run `genlab data fetch fsdd` again)")
    return _read_files(files, labels, list(WORDS), "fsdd", str(folder), sample_rate, length, budget_gb)


def _read_files(files: list[Path], labels: list[int] | None, classes: list[str], name: str, source: str,
                sample_rate: int, length: int, budget_gb: float) -> AudioDataset:
    """Read and preprocess every file; unreadable ones are dropped, counted and named in a warning."""
    check_memory(len(files) * length * 4, budget_gb, source, f"{len(files)} clips of {length} samples")
    waves = np.empty((len(files), length), np.float32)
    kept, dropped = [], []
    for i, f in enumerate(files):
        try:
            clip = _read_clip(f, sample_rate, length, budget_gb)
        except sf.SoundFileError as e:
            dropped.append(f"{f.name}: {e}")
            continue
        if clip is None:
            dropped.append(f"{f.name}: no audible samples (empty, silent or not finite)")
            continue
        waves[len(kept)] = clip
        kept.append(i)
    if dropped:
        log.warning("dropped %d of %d audio files in %s that could not be used (%s%s)", len(dropped), len(files),
                    source, "; ".join(dropped[:SHOWN_DROPS]), "; ..." if len(dropped) > SHOWN_DROPS else "")
    if not kept:
        raise DataError(f"{source}: none of the {len(files)} audio files could be used (first: {dropped[0]}); "
                        "expected WAV, FLAC or OGG files holding sound")
    y = torch.tensor([labels[i] for i in kept], dtype=torch.int64) if labels is not None else None
    return AudioDataset(torch.from_numpy(waves[:len(kept)]), y, classes if y is not None else [], sample_rate, name,
                        source, len(dropped))


def _read_clip(path: Path, sample_rate: int, length: int, budget_gb: float) -> np.ndarray | None:
    """One file -> a preprocessed clip, or None if it holds nothing usable; its header's size is checked first."""
    with sf.SoundFile(path) as snd:
        check_memory(snd.frames * snd.channels * READ_BYTES, budget_gb, str(path),
                     f"reading {snd.frames} frames x {snd.channels} channels ({snd.frames / snd.samplerate:.4g} s "
                     f"at {snd.samplerate} Hz)")
        data = snd.read(dtype="float32", always_2d=True)
        rate = snd.samplerate
    if not data.size or not np.isfinite(data).all():
        return None
    return prepare_clip(data, rate, sample_rate, length)


# ---------------------------------------------------------------------------------------------
# Augmentation: each item's settings drawn from the caller's generator, so that a batch is reproducible.

def augment(x: torch.Tensor, cfg: DataConfig, generator: torch.Generator) -> torch.Tensor:
    """Clips (B, 1, T) with the augmentations `cfg` enables, in this order: speed (up to +-cfg.speed, by
    resampling, length kept), time shift (up to cfg.time_shift seconds, zero fill), gain (up to +-cfg.gain_db)
    and white noise at cfg.noise_snr_db. Results are clipped to [-1, 1]; with all four 0, `x` is returned as is."""
    if not (cfg.speed or cfg.time_shift or cfg.gain_db or cfg.noise_snr_db):
        return x
    b = len(x)

    def uniform(half_width: float) -> torch.Tensor:  # (B,) values in [-half_width, half_width]
        return ((torch.rand(b, generator=generator) * 2 - 1) * half_width).to(x.device)

    if cfg.speed:
        x = change_speed(x, 1 + uniform(cfg.speed))
    if cfg.time_shift:
        most = round(cfg.time_shift * cfg.sample_rate)
        x = shift(x, torch.randint(-most, most + 1, (b,), generator=generator).to(x.device))
    if cfg.gain_db:
        x = x * 10 ** (uniform(cfg.gain_db) / 20)[:, None, None]
    if cfg.noise_snr_db:
        x = add_noise(x, cfg.noise_snr_db, generator)
    return x.clamp(-1.0, 1.0)


def change_speed(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Play each clip of (B, 1, T) `factors[i]` times as fast, about its centre, keeping T samples: frequencies
    scale by the factor (linear interpolation; silence where the slowed clip runs out)."""
    t = x.shape[-1]
    centre = (t - 1) / 2
    pos = centre + (torch.arange(t, device=x.device, dtype=x.dtype) - centre) * factors[:, None].to(x.dtype)  # (B, T)
    grid = torch.stack([pos / (t - 1) * 2 - 1, torch.zeros_like(pos)], dim=-1)[:, None]  # (B, 1, T, 2) in [-1, 1]
    return F.grid_sample(x[:, :, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, :, 0]


def shift(x: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Move each clip of (B, 1, T) later by `samples[i]` (earlier when negative), filling with zeros."""
    t = x.shape[-1]
    src = torch.arange(t, device=x.device) - samples[:, None]  # (B, T): where each output sample comes from
    inside = ((src >= 0) & (src < t))[:, None]
    return x.gather(-1, src.clamp(0, t - 1)[:, None]) * inside


def add_noise(x: torch.Tensor, snr_db: float, generator: torch.Generator) -> torch.Tensor:
    """White Gaussian noise whose power is each clip's mean power divided by 10^(snr_db / 10)."""
    power = x.pow(2).mean(dim=-1, keepdim=True)
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return x + noise * (power / 10 ** (snr_db / 10)).sqrt()
