"""`genlab eval` for video runs. In the video judge's features (genlab.evaluation.judged): judge-FVD, KID,
precision/recall, density/coverage, Inception Score from its classes, class entropy, conditional accuracy; then
the video kind's own rows, each with the real-vs-real floor at the same N:

  order_score          the judge's mean probability that a clip's frames are in their order (real: near 1)
  frame_*              the per-frame image metrics (FID, KID, precision/recall, density/coverage), in an image
                       judge trained on frames of the training clips
  temporal_change_w1   Wasserstein-1 distance of the frame-to-frame change to the training clips'
  plausible_motion     share of clips whose object moves on a straight-and-bounce path (one-object built-ins)

and memorisation in pixel space over whole clips.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from genlab.evaluation import video_metrics as V
from genlab.evaluation.image_metrics import real_radii
from genlab.evaluation.judged import Judge, Reference, evaluate_judged, feature_metrics
from genlab.kinds.video.judge import frame_judge, frames_of, get_judge, load_judge
from genlab.kinds.video.prepare import eval_clips, load_split
from genlab.loading import load, load_config
from genlab.prepare import needs_labels
from genlab.training.trainer import validate

FVD_NOTE = ("judge-FVD: the Fréchet distance in the features of a (2+1)-D video judge trained on this data; not "
            "comparable with published FVD, which uses the features of an I3D network trained on Kinetics")


def video_rows(train: torch.Tensor, val: torch.Tensor, judge: Judge, frame_judge_: Judge | None, frames: int,
               one_object: bool, seed: int):
    """The `extra` hook of the judged evaluation: adds the video kind's rows for the samples, each with its floor
    (the held-out clips `val` in place of the samples, at the same N)."""

    def rows(samples: torch.Tensor, labels, add) -> None:
        n = min(len(samples), len(val))
        held, fake = val[:n], samples[:n]
        order = judge.model.order_probs
        score = lambda x: float(np.mean(judge.batched(order, x, 250)))   # noqa: E731
        add("order_score", score(samples), len(samples), note="video judge's mean P(frames in order); real clips: "
            "near 1, shuffled: near 0", floor=score(held))
        if frame_judge_ is not None:
            real = frame_judge_.features(frames_of(train, frames))
            f_fake, f_held = (frame_judge_.features(frames_of(x, frames)) for x in (fake, held))
            radii = real_radii(real)
            on_fake, on_held = (feature_metrics(real, f, seed, radii=radii) for f in (f_fake, f_held))
            for key, value in on_fake.items():
                add(f"frame_{key}", value, len(f_fake), len(real), floor=on_held[key],
                    note="" if key != "fid" else "the image metrics of frames (FRAMES_PER_CLIP per clip, evenly "
                    "spaced) in an image judge (classifier) trained on frames of the training clips; at the floor's N")
        add("temporal_change_w1", V.change_distance(train, fake), n, len(train),
            floor=V.change_distance(train, held), note="Wasserstein-1 distance between the distributions of mean "
            "|frame t+1 - frame t| of the samples and of the training clips; at the floor's N")
        if one_object:
            add("plausible_motion", float(V.plausible(samples).mean()), len(samples),
                floor=float(V.plausible(held).mean()), note="share of clips whose tracked object moves on a "
                "straight-and-bounce path (genlab.evaluation.video_metrics); the floor is the tracker's own rate "
                "on real clips")

    return rows


def evaluate_video_run(run_dir: Path, *, n: int = 500, seed: int = 0, judge: str | Path | Judge | None = None,
                       controls: dict | None = None, progress: bool = True, log=print) -> dict:
    """Score a run, write `eval.json` into it and return the report."""
    t0 = time.time()
    cfg = load_config(run_dir)
    model = load(run_dir)
    ds, train, val = load_split(cfg)
    f = cfg.data.frames
    if not isinstance(judge, Judge):
        judge = (load_judge(judge, like=model.config) if judge else
                 get_judge(cfg.data, ds=ds, progress=progress, log=log))
    images = frame_judge(cfg.data, train, progress=progress, log=log) if ds.labels is not None else None
    train_x, val_x = (d.floats((slice(None), slice(f))) for d in (train, val))   # crops are for training only
    one_object = ds.tracks is not None and ds.tracks.shape[2] == 1   # a built-in's clips of one object
    ref = Reference(train_x, val_x, val.labels, "clips", distance="fvd", distance_note=FVD_NOTE,
                    copy_note="pixel-space near-copies of whole clips only (nearest training clip closer than 1/3 "
                              "of its own NN distance)", train_labels=train.labels,
                    extra=video_rows(train_x, val_x, judge, images, f, one_object, seed))
    held_val = val if needs_labels(cfg) else val.unlabelled()
    dev = next(model.parameters()).device
    with torch.no_grad():
        heldout = validate(model, lambda: eval_clips(held_val, f, 64, dev), seed=0)
    return evaluate_judged(run_dir, cfg, model, judge, ref, heldout, n=n, seed=seed, controls=controls, t0=t0,
                           log=log)
