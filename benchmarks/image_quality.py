"""Image families side by side: each trained for the same wall budget on each dataset, then scored by
the dataset's judge at equal N against the real-vs-real floor.

    python benchmarks/image_quality.py [--families vae,gan,ddpm] [--datasets digits,shapes] [--minutes 2] [-n 500]

Prints one Markdown table: parameters, training img/s (fp32 from the budget run, bf16 from a short
extra run), sampling img/s (DDPM: DDIM 20 and 50 steps,
and the full 1000-step ancestral sampler), FID/KID/precision/recall/coverage, conditional accuracy,
memorisation, and the floor. All runs are class-conditional (DDPM sampled with guidance 2).
"""

from __future__ import annotations

import argparse

import torch

from common import markdown, sampling_rate, timed_train

import genlab

CONTROLS = {"ddpm": {"sampler": "ddim", "steps": 50, "guidance": 2.0}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="vae,gan,ddpm")
    p.add_argument("--datasets", default="digits,shapes")
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--preset", default="tiny")
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for data in args.datasets.split(","):
        for family in args.families.split(","):
            run, rate = timed_train(family, data, preset=args.preset, minutes=args.minutes, conditional=True,
                                    overrides=[f"train.threads={args.threads}"])
            model = genlab.load(run.path)
            _, bf16 = timed_train(family, data, preset=args.preset, steps=40, precision="bf16", conditional=True,
                                  overrides=[f"train.threads={args.threads}"])
            row = {"data": data, "family": family, "params": sum(p.numel() for p in model.parameters()),
                   "steps": run.result.step, "train img/s": rate, "bf16 train img/s": bf16}
            if family == "ddpm":
                for steps in (20, 50):
                    row[f"DDIM{steps} img/s"] = sampling_rate(model, 32, repeats=1, steps=steps)
                row["DDPM1000 img/s"] = sampling_rate(model, 8, repeats=1, sampler="ddpm")
            else:
                row["sample img/s"] = sampling_rate(model, 256)
            rep = genlab.evaluate(run.path, n=args.n, controls=CONTROLS.get(family), progress=False,
                                  log=lambda s: None)
            v = {r["metric"]: r["value"] for r in rep["rows"]}
            nf = rep["floor"]["n_samples"]
            row.update({"FID": v["fid"], "KID": v["kid"], "precision": v["precision"], "recall": v["recall"],
                        "coverage": v["coverage"], "cond. acc": v.get("conditional_accuracy"),
                        "memorised": v["memorisation"], f"FID@floor N": v["fid@floor_n"],
                        "floor FID": rep["floor"]["fid"], "floor N": nf})
            rows.append(row)
            print(row, flush=True)
    print(f"\n{args.minutes} min per run, preset {args.preset}, {args.threads} threads, N={args.n} samples\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
