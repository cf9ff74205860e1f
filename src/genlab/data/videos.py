"""Video clips in memory: the dataset type, and loading a clip set by name.

The bottom of genlab.data's video side, as `images` is of its image side and `clips` of its audio side: `moving`
(the procedural built-ins) and `video_readers` (GIF, MP4/WebM and array files) build on it. A clip is
`frames` RGB (or grey) square frames at a fixed frame rate; clips are held as uint8 (a 16-frame 32x32 RGB clip
is 48 KB, a quarter of float32) and become float32 in [-1, 1] batch by batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from genlab.errors import DataError

VIDEO_BUILTINS = {  # drawn by genlab.data.moving
    "moving-shapes": "procedural RGB clips (data.frames frames, 32x32) of 1-2 shapes moving at constant velocity and "
                     "bouncing off the walls; label = the shape (data.motion_label: and its direction); seeded",
    "moving-digits": "Moving-MNIST-style clips: 1-2 of scikit-learn's digits (or MNIST after `genlab data fetch "
                     "mnist`, data.source_digits=mnist) bouncing on a 32x32 or 64x64 grey canvas; label = the digit",
}
VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".mkv", ".mov", ".avi")
PATH_KINDS = ("a folder of GIF/MP4/WebM files (one sub-folder per class for labels), or a .npy/.npz array of "
              "clips shaped (N, T, C, H, W), (N, T, H, W, C) or (N, T, H, W)")


@dataclass
class VideoDataset:
    clips: torch.Tensor                 # uint8, (N, F, C, H, W): F frames of C channels, H = W
    labels: torch.Tensor | None = None  # int64, (N,); None when the source has no labels
    classes: list[str] = field(default_factory=list)  # label names, index = label id
    fps: float = 8.0                    # frames per second every clip was normalised to
    name: str = ""                      # "moving-shapes", a folder path, ...
    source: str = ""                    # where the clips came from, for reports and model cards
    dropped: int = 0                    # files of the source that could not be used (see the reader's warning)
    tracks: torch.Tensor | None = None  # float32 (N, F, objects, 2): the built-ins' object centres (x, y) in pixels
    groups: torch.Tensor | None = None  # int64 (N,): the file (or array row) each clip was cut from, for splits

    def __post_init__(self):
        if self.clips.ndim != 5 or self.clips.dtype != torch.uint8:
            raise DataError(f"{self.name}: clips must be uint8 (N, F, C, H, W), got {self.clips.dtype} "
                            f"{tuple(self.clips.shape)}")
        if self.clips.shape[-1] != self.clips.shape[-2]:
            raise DataError(f"{self.name}: frames must be square, got {tuple(self.clips.shape[-2:])}")
        if self.groups is not None and len(self.groups) != len(self.clips):
            raise DataError(f"{self.name}: {len(self.groups)} source ids for {len(self.clips)} clips")
        if self.labels is not None and len(self.labels) != len(self.clips):
            raise DataError(f"{self.name}: {len(self.labels)} labels for {len(self.clips)} clips; expected one each")

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def frames(self) -> int:
        return self.clips.shape[1]

    @property
    def channels(self) -> int:
        return self.clips.shape[2]

    @property
    def image_size(self) -> int:
        return self.clips.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.labels is not None else 0

    def subset(self, index: torch.Tensor) -> "VideoDataset":
        pick = (lambda t: t[index] if t is not None else None)  # noqa: E731
        return VideoDataset(self.clips[index], pick(self.labels), list(self.classes), self.fps, self.name,
                            self.source, self.dropped, pick(self.tracks), pick(self.groups))

    def unlabelled(self) -> "VideoDataset":
        return VideoDataset(self.clips, None, [], self.fps, self.name, self.source, self.dropped, self.tracks,
                            self.groups)

    def floats(self, index=slice(None)) -> torch.Tensor:
        """Clips `index` as float32 in [-1, 1], (n, F, C, H, W)."""
        return to_unit(self.clips[index])

    def fingerprint(self) -> str:
        """A short hash of the clips, labels and frame rate, used to key cached judges."""
        h = hashlib.sha256(self.clips.contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        h.update(f"{self.fps:g}".encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "count": len(self), "frames": self.frames,
                "channels": self.channels, "image_size": self.image_size, "fps": self.fps,
                "classes": list(self.classes), "dropped": self.dropped}


def split_clips(ds: VideoDataset, val_fraction: float, seed: int) -> tuple[VideoDataset, VideoDataset]:
    """The deterministic train/validation split (genlab.data.images.split), by source file when the clips were cut
    from files: neighbouring windows of one video are near-copies, and must not sit on both sides of the split."""
    from genlab.data.images import split

    if ds.groups is None or len(ds.groups.unique()) < 2:
        return split(ds, val_fraction, seed)
    ids = ds.groups.unique()
    perm = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))]
    n_val = max(1, int(round(len(ids) * val_fraction)))
    if n_val >= len(ids):
        raise DataError(f"{ds.name}: {len(ids)} source files are too few to hold out {val_fraction:.0%} of them")
    held = torch.isin(ds.groups, perm[:n_val])
    return ds.subset(torch.nonzero(~held).flatten()), ds.subset(torch.nonzero(held).flatten())


def to_unit(clips: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1]."""
    return clips.float().div_(127.5).sub_(1.0)


def to_uint8(clips: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 0..255 (rounded, clamped)."""
    return ((clips.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def check_clips(count: int, frames: int, channels: int, size: int, budget_gb: float, where: str) -> None:
    """Refuse a clip set whose uint8 tensor would exceed the memory budget, before drawing or decoding it."""
    from genlab.data.images import check_memory

    check_memory(count * frames * channels * size * size, budget_gb, where,
                 f"{count} clips of {frames} frames of {channels}x{size}x{size}")
