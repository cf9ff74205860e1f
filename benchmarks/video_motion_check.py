"""The straight-and-bounce test (genlab.evaluation.video_metrics.plausible) on real and broken clips.

    python benchmarks/video_motion_check.py [--count 400]

For moving-shapes and moving-digits (one object): the tracker's error against the true centres, and the share
of clips that pass on the true tracks, through the tracker, temporally shuffled, reversed halfway, still (the
first frame repeated) and uniform noise. Prints one Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from common import markdown

from genlab.config import DataConfig
from genlab.data.video_sources import load_video
from genlab.evaluation.video_metrics import plausible, track
from genlab.models.video_classifier import shuffle_frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=400)
    args = p.parse_args()
    rows = []
    for name in ("moving-shapes", "moving-digits"):
        ds = load_video(DataConfig(name=name, count=args.count))
        x, truth = ds.floats(), ds.tracks[:, :, 0].numpy()
        centres, _ = track(x)
        offset = centres - truth
        jitter = np.linalg.norm(offset - offset.mean(1, keepdims=True), axis=-1)   # less each clip's constant bias
        half = x.shape[1] // 2
        rows.append({"data": name, "clips": len(x), "tracker error median px": float(np.median(jitter)),
                     "p90 px": float(np.percentile(jitter, 90)),
                     "true tracks": plausible(x, truth).mean(), "real (tracked)": plausible(x).mean(),
                     "shuffled": plausible(shuffle_frames(x, torch.Generator().manual_seed(0))).mean(),
                     "reversed halfway": plausible(torch.cat([x[:, :half], x[:, :half].flip(1)], 1)).mean(),
                     "still": plausible(x[:, :1].expand_as(x)).mean(),
                     "noise": plausible(torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1).mean()})
    print(markdown(rows))


if __name__ == "__main__":
    main()
