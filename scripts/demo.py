"""`make demo`: train on the built-in digits, sample, evaluate, and say where everything is.

    python scripts/demo.py [--minutes 2] [--out demo]

The demo owns its output folder and replaces it on every run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

import genlab
from genlab.evaluate.report import print_eval, write_report
from genlab.imageio import save_grid


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0, help="training budget of the VAE")
    p.add_argument("--out", default="demo")
    p.add_argument("-n", type=int, default=1000, help="samples for the evaluation")
    args = p.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.time()
    print(f"== training a conditional VAE on the built-in digits for {args.minutes} minutes", flush=True)
    run = genlab.train("vae", data="digits", out=out / "vae-digits", conditional=True, minutes=args.minutes)
    model = genlab.load(run.path)
    images = model.sample(100, cond=torch.arange(100) // 10, generator=torch.Generator().manual_seed(0))
    save_grid(images, out / "vae-samples-by-class.png", nrow=10,
              metadata={"Comment": "AI-generated image", "Software": f"genlab {genlab.__version__}"})
    print("== evaluating (trains and caches a judge classifier the first time)", flush=True)
    report = genlab.evaluate(run.path, n=args.n)
    print_eval(report)
    write_report(run.path)
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    print(f"  samples, one row per digit: {out / 'vae-samples-by-class.png'}")
    print(f"  run folder:                 {run.path}")
    print(f"  evaluation:                 {run.path / 'eval.json'}")
    print(f"  report for a browser:       {run.path / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
