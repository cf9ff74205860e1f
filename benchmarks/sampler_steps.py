"""Fewer sampling steps for the same quality (issue 14, goal 2): DPM-Solver++(2M) against DDIM on one trained DDPM.

    python benchmarks/sampler_steps.py [--run RUN | --minutes 5] [--n 1000] [--threads 2]

Trains a conditional DDPM on digits for --minutes (or takes --run), then scores each sampler and step count
with `genlab eval` (judge FID, its floor at the held-out split's size, conditional accuracy; the same seed,
so the same starting noise for every row) and times 500 samples. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import markdown, timed_train

import genlab

ROWS = [("ddim", 10), ("ddim", 20), ("ddim", 50), ("dpm++", 5), ("dpm++", 10), ("dpm++", 15), ("dpm++", 20)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run) if args.run else timed_train(
        "ddpm", "digits", preset="tiny", minutes=args.minutes, out=Path(tempfile.mkdtemp()) / "ddpm",
        overrides=["data.conditional=true", f"train.threads={args.threads}", "train.ema=0.999"])[0].path
    model = genlab.load(run)
    rows = []
    for sampler, steps in ROWS:
        report = genlab.evaluate(run, n=args.n, progress=False, controls={"sampler": sampler, "steps": steps})
        got = {r["metric"]: r["value"] for r in report["rows"]}
        t = time.perf_counter()
        model.sample(500, cond=torch.arange(500) % model.config.num_classes, sampler=sampler, steps=steps,
                     generator=torch.Generator().manual_seed(0))
        rows.append({"sampler": sampler, "steps": steps, "FID": got["fid"], "FID@floor N": got["fid@floor_n"],
                     "cond. acc": got["conditional_accuracy"], "img/s": 500 / (time.perf_counter() - t)})
    floor = report["floor"]
    print(markdown(rows))
    print(f"\nrun {run}; {args.n} samples per row; real-vs-real floor: FID {floor['fid']:.2f} at N="
          f"{floor['n_samples']} (held-out images against the training split)")


if __name__ == "__main__":
    main()
