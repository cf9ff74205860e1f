"""The diffusion quality bar: conditional DDPM on digits for a fixed CPU budget, then DDIM-50 samples
with guidance 2, scored by the digits judge (conditional accuracy and FID against the real-vs-real floor).

    python benchmarks/ddpm_quality_bar.py [--minutes 10] [--preset tiny] [--threads 2]

The bar (issue 3): conditional accuracy >= 0.90 and FID within 3x of the floor at equal N.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import markdown, timed_train

import genlab


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--out", default=None, help="keep the run here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    run, rate = timed_train("ddpm", "digits", preset=args.preset, minutes=args.minutes, conditional=True,
                            out=args.out, overrides=[f"train.threads={args.threads}", "train.log_every=100"])
    controls = {"sampler": "ddim", "steps": 50, "guidance": args.guidance}
    rep = genlab.evaluate(run.path, n=args.n, controls=controls, progress=False, log=lambda s: None)
    values = {r["metric"]: r["value"] for r in rep["rows"]}
    floor = rep["floor"]
    row = {"preset": args.preset, "minutes": args.minutes, "steps": run.result.step, "train img/s": rate,
           "cond. accuracy": values["conditional_accuracy"], f"FID (N={args.n})": values["fid"],
           f"FID@{floor['n_samples']}": values["fid@floor_n"], f"floor FID@{floor['n_samples']}": floor["fid"],
           "FID / floor": values["fid@floor_n"] / floor["fid"], "KID": values["kid"],
           "precision": values["precision"], "recall": values["recall"], "memorisation": values["memorisation"]}
    print(markdown([row]))
    print(f"\nrun: {run.path}; total wall time {time.time() - t0:.0f} s; bar: accuracy >= 0.90 "
          f"({'met' if row['cond. accuracy'] >= 0.9 else 'NOT met'}), FID/floor <= 3 "
          f"({'met' if row['FID / floor'] <= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
