"""Image families side by side: each trained for a wall budget on each dataset, then scored by the dataset's
judge at equal N against the real-vs-real floor.

    python benchmarks/image_quality.py [--families vae,gan,ddpm] [--datasets digits,shapes] [--minutes 2]
                                       [--budget ddpm=15] [--preset tiny] [--preset-for vae=small]
                                       [--image-size 28] [-n 500] [--grids DIR] [--no-bf16]

`--datasets` takes built-in names or paths (an MNIST-format IDX folder, an image folder, an .npz); `--budget`
and `--preset-for` set one family's minutes and preset (the issue 16 table: vae=5, gan=5, ddpm=15 with presets
small, small, tiny, on 28x28 digits). Prints one Markdown table: parameters, training img/s (fp32 from the
budget run, bf16 from a short extra run), sampling img/s (DDPM: DDIM 20 and 50 steps and the full 1000-step
ancestral sampler), FID/KID/precision/recall/coverage, coverage within each class beside the held-out data's,
conditional accuracy, memorisation, the floor, and isolated bright specks per image (in 10 samples per class,
beside the data's own count). All runs are class-conditional (DDPM and LDM sampled by DDIM 50 with guidance
2). `--grids DIR` writes each run's samples as a PNG, one row per class and one column per seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from common import markdown, sampling_rate, timed_train

import genlab
from genlab.data import load_images
from genlab.imageio import save_grid

DIFFUSION = ("ddpm", "ldm")   # sampled by DDIM with guidance; their sampling rate is per sampler
CONTROLS = {family: {"sampler": "ddim", "steps": 50, "guidance": 2.0} for family in DIFFUSION}
SEEDS = 10   # columns of a --grids picture


def specks(images: torch.Tensor) -> float:
    """Isolated bright specks per image: connected groups of at most 3 pixels brighter than mid-grey (> 0 in
    [-1, 1], any channel) apart from each image's largest bright region (issue 16 saw them on DDPM backgrounds)."""
    counts = []
    for im in images.amax(1).numpy():
        lab, n = ndimage.label(im > 0, structure=np.ones((3, 3)))
        sizes = ndimage.sum(np.ones_like(im), lab, range(1, n + 1)) if n else np.zeros(0)
        counts.append(int((sizes <= 3).sum() - (n > 0 and sizes.max() <= 3)))
    return float(np.mean(counts))


def per_family(items: list[str], cast) -> dict:
    return {k: cast(v) for k, v in (item.split("=", 1) for item in items)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="vae,gan,ddpm")
    p.add_argument("--datasets", default="digits,shapes")
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--budget", action="append", default=[], metavar="FAMILY=MINUTES")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--preset-for", action="append", default=[], metavar="FAMILY=PRESET")
    p.add_argument("--image-size", type=int, default=0, help="resize the data (0 keeps its size)")
    p.add_argument("--set", action="append", default=[], metavar="FAMILY:KEY=VALUE", help="one family's override")
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--grids", type=Path, default=None)
    p.add_argument("--no-bf16", action="store_true", help="skip the short bf16 throughput run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    budgets, presets = per_family(args.budget, float), per_family(args.preset_for, str)
    rows = []
    for data in args.datasets.split(","):
        for family in args.families.split(","):
            preset, minutes = presets.get(family, args.preset), budgets.get(family, args.minutes)
            overrides = [f"train.threads={args.threads}", *(s.split(":", 1)[1] for s in args.set
                                                           if s.split(":", 1)[0] == family)]
            run, rate = timed_train(family, data, preset=preset, minutes=minutes, conditional=True,
                                    image_size=args.image_size or None, overrides=overrides)
            model = genlab.load(run.path)
            row = {"data": Path(data).name, "family": family, "preset": preset, "minutes": minutes,
                   "params": sum(p.numel() for p in model.parameters()), "steps": run.result.step,
                   "train img/s": rate}
            if not args.no_bf16:
                row["bf16 train img/s"] = timed_train(family, data, preset=preset, steps=40, precision="bf16",
                                                      conditional=True, image_size=args.image_size or None,
                                                      overrides=overrides)[1]
            if family in DIFFUSION:
                for steps in (20, 50):
                    row[f"DDIM{steps} img/s"] = sampling_rate(model, 32, repeats=1, steps=steps)
                row["DDPM1000 img/s"] = sampling_rate(model, 8, repeats=1, sampler="ddpm")
            else:
                row["sample img/s"] = sampling_rate(model, 256)
            rep = genlab.evaluate(run.path, n=args.n, controls=CONTROLS.get(family), progress=False,
                                  log=lambda s: None)
            v = {r["metric"]: r["value"] for r in rep["rows"]}
            cc = next((r for r in rep["rows"] if r["metric"] == "class_coverage"), {})
            row.update({"FID": v["fid"], "KID": v["kid"], "precision": v["precision"], "recall": v["recall"],
                        "coverage": v["coverage"], "class coverage": cc.get("value"),
                        "class coverage (held-out)": cc.get("floor"), "cond. acc": v.get("conditional_accuracy"),
                        "memorised": v["memorisation"], "FID@floor N": v["fid@floor_n"],
                        "floor FID": rep["floor"]["fid"], "floor N": rep["floor"]["n_samples"],
                        "run": str(run.path)})
            k = model.config.num_classes
            x = model.sample(k * SEEDS, cond=torch.arange(k).repeat_interleave(SEEDS),
                             generator=torch.Generator().manual_seed(0), **CONTROLS.get(family, {}))
            row["specks/img"] = specks(x)
            row["specks/img (data)"] = specks(load_images(model.run.config.data).images[:len(x)])
            if args.grids:
                args.grids.mkdir(parents=True, exist_ok=True)
                save_grid(x, args.grids / f"{Path(data).name}-{family}.png", nrow=SEEDS)
            rows.append(row)
            print(row, flush=True)
    print(f"\nbudgets {budgets or args.minutes} min (default {args.minutes}), presets {presets or args.preset} "
          f"(default {args.preset}), image size {args.image_size or 'native'}, {args.threads} threads, "
          f"N={args.n} samples\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
