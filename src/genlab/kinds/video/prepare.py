"""The video kind's data for a family: load and split the clips, size the model config from them (channels,
frame size, frames, classes), deterministic batches with random temporal crops (data.crop_frames) and flips
(data.flip), and the training preview (an animated GIF of one clip per class and its filmstrip PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from genlab.config import ConfigError, DataConfig, RunConfig
from genlab.data.images import resize_square
from genlab.data.loader import SeededOrder
from genlab.data.readers import UNREADABLE
from genlab.data.video_readers import read_video_array, read_video_file
from genlab.data.video_sources import load_video
from genlab.data.videos import VideoDataset, split_clips, to_unit
from genlab.errors import DataError, UsageError
from genlab.prepare import Prepared, needs_labels, preview_samples
from genlab.provenance import VIDEO_COMMENT
from genlab.videoio import save_filmstrip, save_video


class VideoLoader:
    """Batch i of rank r depends only on (seed, i, r), as genlab.data.loader.BatchLoader: its SeededOrder, then
    for each clip a window of data.frames frames at a random start (when the clips were read data.crop_frames
    longer) and, with data.flip, a horizontal flip, drawn from (seed, i, r)."""

    unit = "clip"

    def __init__(self, ds: VideoDataset, batch_size: int, seed: int, data: DataConfig, *, rank: int = 0,
                 world: int = 1, device: torch.device = torch.device("cpu")):
        self.order = SeededOrder(len(ds), batch_size, seed, rank, world, f"{ds.name}: {len(ds)} training clips")
        self.ds, self.frames, self.device = ds, data.frames, device
        self.flip = data.flip and not data.motion_label   # a flip would turn "up-left" into "up-right"
        self.per_epoch, self.items_per_batch = self.order.per_epoch, batch_size

    def batch(self, i: int) -> dict:
        idx = self.order.indices(i)
        g = self.order.generator(i)
        clips = self.ds.clips[idx]
        spare = clips.shape[1] - self.frames
        start = torch.randint(0, spare + 1, (len(idx),), generator=g)
        window = start[:, None] + torch.arange(self.frames)
        x = to_unit(clips[torch.arange(len(idx))[:, None], window])
        if self.flip:
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
        y = self.ds.labels[idx].to(self.device) if self.ds.labels is not None else None
        return {"x": x.to(self.device), "y": y}


def eval_clips(ds: VideoDataset, frames: int, batch_size: int, device: torch.device, limit: int | None = None):
    """Fixed batches over (the first `limit` of) the clips, their first `frames` frames (no augmentation)."""
    n = len(ds) if limit is None else min(limit, len(ds))
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        yield {"x": ds.floats((slice(s, e), slice(frames))).to(device),
               "y": ds.labels[s:e].to(device) if ds.labels is not None else None}


def load_split(cfg: RunConfig) -> tuple[VideoDataset, VideoDataset, VideoDataset]:
    """The clips and their train/validation split, by source file for clips cut from files (data.videos.split_clips)."""
    ds = load_video(cfg.data)
    train, val = split_clips(ds, cfg.data.val_fraction, cfg.data.seed)
    return ds, train, val


def prepare_video(cfg: RunConfig, run_dir: Path | None = None, *, resume: bool = False) -> Prepared:
    """Load and split the clips, size the model config from them, and set up the training preview."""
    ds, train, val = load_split(cfg)
    if needs_labels(cfg) and ds.labels is None:
        raise ConfigError(f"{cfg.family} {'with --conditional ' if cfg.data.conditional else ''}needs labelled clips, "
                          f"but {ds.name} has no labels (use a folder with one sub-folder of videos per class)")
    m = cfg.model
    for name, value in (("in_channels", ds.channels), ("image_size", ds.image_size), ("frames", cfg.data.frames),
                        ("fps", ds.fps)):
        if hasattr(m, name):
            setattr(m, name, value)
    if hasattr(m, "num_classes"):
        m.num_classes = ds.num_classes if needs_labels(cfg) else 0
    if not needs_labels(cfg):  # an unconditional generator never sees the labels
        train, val = train.unlabelled(), val.unlabelled()
    tc = cfg.train

    def make_loader(*, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu")):
        return VideoLoader(train, tc.batch_size, tc.seed, cfg.data, rank=rank, world=world, device=device)

    return Prepared(make_loader, lambda device: eval_clips(val, cfg.data.frames, 64, device, limit=512),
                    video_preview(cfg.data.fps),
                    train.describe() | {"count": len(train) + len(val), "frames": cfg.data.frames})


def write_clips(clips: torch.Tensor, fps: float, path: Path, metadata: dict, nrow: int | None = None) -> list[Path]:
    """The clips side by side as `path` (.gif or .mp4) and their filmstrip as `path`.png; returns both."""
    strip = path.with_suffix(".png")
    save_video(path, clips, fps, metadata, nrow=nrow)
    save_filmstrip(strip, clips, metadata)
    return [path, strip]


def video_preview(fps: float):
    """The preview hook: one clip per class (or 8 clips) with seed 0 as samples/step-N.gif and its filmstrip,
    step-N.png."""

    def preview(model: nn.Module, step: int, run_dir: Path):
        drawn = preview_samples(model, step, run_dir, VIDEO_COMMENT)
        if drawn is not None:
            clips, meta, out = drawn
            write_clips(clips, fps, out.with_suffix(".gif"), meta, nrow=min(len(clips), 8))
        return {}, None

    return preview


def read_context(path: str | Path, model, frames: int) -> torch.Tensor:
    """The first `frames` frames of a video file (GIF/MP4/WebM, or the first clip of a .npy/.npz) as the context a
    video model continues: (frames, C, H, W) in [-1, 1], resampled to the model's frame rate, resized to its
    frame size and converted to its channels."""
    c, path = model.config, Path(path)
    if not 1 <= frames < c.frames:
        raise UsageError(f"--context-frames {frames}: expected 1 to {c.frames - 1} (the model makes clips of "
                         f"{c.frames} frames)")
    if not path.is_file():
        raise UsageError(f"--prompt {path}: no such file; expected a GIF, MP4/WebM or .npy/.npz clip")
    if path.suffix.lower() in (".npy", ".npz"):
        x = read_video_array(path, DataConfig(name=str(path), frames=frames, fps=c.fps)).floats(slice(0, 1))[0]
    else:
        try:
            got = read_video_file(path, c.fps, DataConfig.max_seconds, DataConfig.memory_budget_gb)
        except UNREADABLE as e:
            raise DataError(f"--prompt {path}: cannot read it as a video ({e})") from e
        if len(got) < frames:
            raise DataError(f"--prompt {path}: has {len(got)} frames at {c.fps:g} fps; expected at least {frames}")
        x = to_unit(torch.from_numpy(np.stack(got[:frames])).permute(0, 3, 1, 2))
    x = x[:frames]
    if x.shape[1] != c.in_channels:   # grey <-> RGB
        x = x.mean(1, keepdim=True) if c.in_channels == 1 else x.expand(-1, 3, -1, -1)
    return resize_square(x, c.image_size) if x.shape[-1] != c.image_size or x.shape[-2] != c.image_size else x
