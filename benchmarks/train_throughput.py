"""Training and sampling throughput per family, preset and precision on the built-in datasets.

    python benchmarks/train_throughput.py [--families vae,gan] [--steps 150] [--threads 2]

Prints a Markdown table (images/s); paste it into benchmarks/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import platform

import torch

from common import markdown, sampling_rate, timed_train

import genlab

SAMPLE_CONTROLS = {"ddpm": [("DDIM 20", {"sampler": "ddim", "steps": 20}), ("DDIM 50", {"sampler": "ddim", "steps": 50})]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="vae")
    p.add_argument("--data", default="digits")
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for family in args.families.split(","):
        for preset in args.presets.split(","):
            for precision in ("fp32", "bf16"):
                run, rate = timed_train(family, args.data, preset=preset, precision=precision, steps=args.steps,
                                        overrides=[f"train.threads={args.threads}"])
                model = genlab.load(run.path)
                row = {"family": family, "data": args.data, "preset": preset, "precision": precision,
                       "params": sum(p.numel() for p in model.parameters()), "train img/s": rate}
                for name, controls in SAMPLE_CONTROLS.get(family, [("sample", {})]):
                    if precision == "fp32":
                        row[f"{name} img/s"] = sampling_rate(model, 256 if family != "ddpm" else 64, **controls)
                rows.append(row)
                print(rows[-1], flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
