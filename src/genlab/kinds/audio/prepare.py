"""The audio kind's data for a family: load and split the clips, size the model config from them (sample rate,
length, classes), deterministic augmented batches, and the training preview (a WAV of one clip per class and
its spectrograms as a PNG, both with provenance)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genlab.audioio import save_wav
from genlab.config import ConfigError, DataConfig, RunConfig
from genlab.data.audio import AudioDataset, augment, load_audio
from genlab.data.audio_features import log_mel
from genlab.data.images import split
from genlab.data.loader import SeededOrder
from genlab.imageio import save_grid
from genlab.prepare import Prepared, needs_labels, preview_samples
from genlab.provenance import AUDIO_COMMENT

GAP_SECONDS = 0.25   # silence between the clips of one WAV (previews, `genlab sample --out x.wav`)
SPECTROGRAM = {"n_fft": 256, "hop": 64, "n_mels": 48}   # the PNGs' spectrograms (8 kHz speech: 8 ms hops)


class AudioLoader:
    """Batch i of rank r depends only on (seed, i, r), as genlab.data.loader.BatchLoader: its SeededOrder, and
    augmentation (data.time_shift, gain_db, noise_snr_db, speed) drawn from (seed, i, r)."""

    unit = "clip"

    def __init__(self, ds: AudioDataset, batch_size: int, seed: int, data: DataConfig, *, rank: int = 0,
                 world: int = 1, device: torch.device = torch.device("cpu")):
        self.order = SeededOrder(len(ds), batch_size, seed, rank, world, f"{ds.name}: {len(ds)} training clips")
        self.ds, self.data, self.device = ds, data, device
        self.per_epoch, self.items_per_batch = self.order.per_epoch, batch_size

    def batch(self, i: int) -> dict:
        idx = self.order.indices(i)
        x = augment(self.ds.waves[idx][:, None], self.data, self.order.generator(i))
        y = self.ds.labels[idx].to(self.device) if self.ds.labels is not None else None
        return {"x": x.to(self.device), "y": y}


def eval_clips(ds: AudioDataset, batch_size: int, device: torch.device, limit: int | None = None):
    """Fixed batches over (the first `limit` of) the clips, for validation (no augmentation)."""
    n = len(ds) if limit is None else min(limit, len(ds))
    for s in range(0, n, batch_size):
        y = ds.labels[s:min(n, s + batch_size)].to(device) if ds.labels is not None else None
        yield {"x": ds.waves[s:min(n, s + batch_size), None].to(device), "y": y}


def prepare_audio(cfg: RunConfig, run_dir: Path | None = None, *, resume: bool = False) -> Prepared:
    """Load and split the clips, size the model config from them, and set up the training preview."""
    ds = load_audio(cfg.data)
    if needs_labels(cfg) and ds.labels is None:
        raise ConfigError(f"{cfg.family} {'with --conditional ' if cfg.data.conditional else ''}needs labelled clips, "
                          f"but {ds.name} has no labels (use a folder with one sub-folder of recordings per class)")
    train, val = split(ds, cfg.data.val_fraction, cfg.data.seed)
    m = cfg.model
    for name, value in (("sample_rate", ds.sample_rate), ("length", ds.waves.shape[1])):
        if hasattr(m, name):
            setattr(m, name, value)
    if hasattr(m, "num_classes"):
        m.num_classes = ds.num_classes if needs_labels(cfg) else 0
    if not needs_labels(cfg):  # an unconditional generator never sees the labels
        train, val = (AudioDataset(d.waves, None, [], d.sample_rate, d.name, d.source, d.dropped) for d in (train, val))
    tc = cfg.train

    def make_loader(*, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu")):
        return AudioLoader(train, tc.batch_size, tc.seed, cfg.data, rank=rank, world=world, device=device)

    return Prepared(make_loader, lambda device: eval_clips(val, 256, device, limit=1024), audio_preview,
                    train.describe() | {"count": len(train) + len(val)})


def spectrograms(clips: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Clips (n, 1, T) -> log-mel spectrograms as images (n, 1, n_mels, frames) in [-1, 1], low frequencies at the
    bottom, 80 dB of range below the loudest bin."""
    mel = log_mel(clips[:, 0].float().cpu(), sample_rate, **SPECTROGRAM)       # natural log of power
    db = mel * (10 / torch.log(torch.tensor(10.0)))
    db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80)
    lo, hi = db.amin(dim=(1, 2), keepdim=True), db.amax(dim=(1, 2), keepdim=True)
    return ((db - lo) / (hi - lo).clamp_min(1e-6) * 2 - 1).flip(1)[:, None]


def write_clips(clips: torch.Tensor, sample_rate: int, wav: Path, png: Path | None, metadata: dict,
                nrow: int | None = None) -> None:
    """The clips (n, 1, T) as one WAV, GAP_SECONDS of silence between them, and their spectrograms as a PNG grid."""
    gap = torch.zeros(int(GAP_SECONDS * sample_rate))
    parts = [p for c in clips.float().cpu() for p in (c[0], gap)][:-1]
    save_wav(wav, torch.cat(parts), sample_rate, metadata)
    if png is not None:
        save_grid(spectrograms(clips, sample_rate), png, nrow=nrow, metadata=metadata)


def audio_preview(model: nn.Module, step: int, run_dir: Path):
    """One clip per class (or 8 clips) with seed 0: samples/step-N.wav and its spectrograms, step-N.png."""
    drawn = preview_samples(model, step, run_dir, AUDIO_COMMENT)
    if drawn is not None:
        clips, meta, out = drawn
        write_clips(clips, model.config.sample_rate, out.with_suffix(".wav"), out.with_suffix(".png"), meta,
                    nrow=len(clips))
    return {}, None
