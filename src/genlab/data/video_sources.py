"""Loading a video clip set by name: a built-in (genlab.data.moving), a folder of video files or an array file
(genlab.data.video_readers). The top of genlab.data's video side, as `sources` is of its image side."""

from __future__ import annotations

from pathlib import Path

from genlab.data.moving import BUILTINS as MOVING
from genlab.data.video_readers import read_video_array, read_video_folder
from genlab.data.videos import PATH_KINDS, VIDEO_BUILTINS, VideoDataset
from genlab.errors import DataError


def load_video(cfg) -> VideoDataset:
    """The clips `cfg.name` names (a built-in, see VIDEO_BUILTINS, a folder or an array file): `cfg.frames` frames
    (plus `cfg.crop_frames` for random temporal crops) at `cfg.fps`, square frames of `cfg.image_size` (0: the
    source's own size)."""
    if cfg.frames < 2:
        raise DataError(f"data.frames={cfg.frames}; a clip needs at least 2 frames (16 is usual)")
    if cfg.crop_frames < 0 or not cfg.fps > 0:
        raise DataError(f"data.crop_frames={cfg.crop_frames}, data.fps={cfg.fps}; expected crop_frames >= 0 and a "
                        "positive frame rate")
    if not cfg.memory_budget_gb > 0:
        raise DataError(f"data.memory_budget_gb={cfg.memory_budget_gb}; expected a positive number of GB")
    path = Path(cfg.name).expanduser()
    try:
        if cfg.name in MOVING:
            ds = MOVING[cfg.name](cfg)
        elif cfg.name and path.is_dir():
            ds = read_video_folder(path, cfg)
        elif path.suffix.lower() in (".npy", ".npz") and path.is_file():
            ds = read_video_array(path, cfg)
        else:
            raise DataError(f"unknown video dataset {cfg.name!r}: not a built-in name and no such folder or file. "
                            f"Expected a built-in ({', '.join(VIDEO_BUILTINS)}) or {PATH_KINDS}")
    except MemoryError as e:
        raise DataError(f"{cfg.name}: ran out of memory loading these clips; expected data that fits in free memory: "
                        "use fewer, shorter or smaller clips, or lower data.memory_budget_gb to refuse it up "
                        "front") from e
    if cfg.conditional and ds.labels is None:
        raise DataError(f"{ds.source or ds.name}: data.conditional=true but these clips have no labels; put each "
                        "class's videos in a sub-folder of its own, or train unconditionally")
    return ds
