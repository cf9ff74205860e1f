"""The video judges, trained on the run's own labelled clips and cached under `<cache>/judges/`, like the image
judge (genlab.kinds.image.judge):

  - a `videoclf` ((2+1)-D CNN: the clip's label, and whether its frames are in order) whose features are the space
    of judge-FVD, KID, precision/recall and coverage;
  - for the per-frame metrics, the image judge (a `classifier`) trained on frames of the training clips, written
    once as an .npz image dataset beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genlab.config import DataConfig
from genlab.data.fetch import cache_root
from genlab.data.videos import VideoDataset, to_unit
from genlab.errors import UsageError
from genlab.evaluation.judged import Judge, judge_key, needs_training, train_judge
from genlab.imageio import save_npz
from genlab.kinds.video.prepare import prepare_video
from genlab.loading import load

JUDGE_FAMILY = "videoclf"
JUDGE_STEPS = 1200
FRAMES_PER_CLIP = 4   # frames of each training clip the per-frame image judge learns from (evenly spaced)


def load_judge(path: str | Path, like=None) -> Judge:
    """A judge from a run folder: a videoclf run; `like` (a model config) names the frames, channels and size its
    clips must have."""
    model = load(path)
    if model.family != JUDGE_FAMILY:
        raise UsageError(f"--judge {path} is a {model.family} run; a video judge must be a {JUDGE_FAMILY} run")
    fields = ("frames", "in_channels", "image_size")
    if like is not None and any(getattr(model.config, f) != getattr(like, f) for f in fields):
        got, want = ([getattr(c, f) for f in fields] for c in (model.config, like))
        raise UsageError(f"--judge {path} judges clips of {got[0]} frames of {got[1]}x{got[2]}x{got[2]}; this run "
                         f"makes {want[0]} frames of {want[1]}x{want[2]}x{want[2]}; expected a judge trained on "
                         "clips like the run's")
    return Judge(model, model.family, Path(path))


def _labelled(ds: VideoDataset) -> None:
    if ds.labels is None or ds.num_classes < 2:
        raise UsageError(f"{ds.name} has no labels, so genlab cannot train a video judge on it; pass --judge with a "
                         f"{JUDGE_FAMILY} run trained on labelled clips of the same frames and size")


def get_judge(data: DataConfig, *, ds: VideoDataset | None = None, steps: int = JUDGE_STEPS,
              cache_dir: str | Path | None = None, progress: bool = True, log=print) -> Judge:
    """The cached video judge for these clips, training it first when the cache has none."""
    from genlab.data.video_sources import load_video

    ds = ds if ds is not None else load_video(data)
    _labelled(ds)
    path = cache_root(cache_dir) / "judges" / f"{judge_key(ds.fingerprint(), data)}-{JUDGE_FAMILY}-{data.frames}"
    if needs_training(path, log):
        train_judge(JUDGE_FAMILY, data, path, steps=steps, batch_size=32, prepare=prepare_video, progress=progress,
                    log=log)
    return load_judge(path)


def frame_judge(data: DataConfig, train_split: VideoDataset, *, cache_dir: str | Path | None = None,
                progress: bool = True, log=print) -> Judge:
    """The image judge of the per-frame metrics: a `classifier` on FRAMES_PER_CLIP frames of every training clip
    (labelled with the clip's label), through genlab.kinds.image.judge (its cache, steps and settings)."""
    from genlab.kinds.image.judge import get_judge as image_judge

    _labelled(train_split)
    folder = cache_root(cache_dir) / "judges"
    frames = folder / f"frames-{judge_key(train_split.fingerprint(), data)}-{data.frames}.npz"
    if not frames.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        save_npz(frames, to_unit(frames_of(train_split.clips, data.frames)),
                 train_split.labels.repeat_interleave(FRAMES_PER_CLIP), train_split.classes)
    image_data = DataConfig(name=str(frames), val_fraction=data.val_fraction, seed=data.seed)
    return image_judge(image_data, cache_dir=cache_dir, progress=progress, log=log)


def frames_of(clips: torch.Tensor, frames: int) -> torch.Tensor:
    """FRAMES_PER_CLIP evenly spaced of the first `frames` frames of each clip (N, F, C, H, W) as images
    (N * k, C, H, W), clip by clip."""
    pick = torch.from_numpy(np.linspace(0, frames - 1, FRAMES_PER_CLIP).round().astype(np.int64))
    x = clips[:, pick]
    return x.reshape(-1, *x.shape[2:])
