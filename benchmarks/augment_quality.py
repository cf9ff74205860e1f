"""Does generated data help a classifier? `genlab augment` at the plan recorded in RESULTS.md (issue 13).

    python benchmarks/augment_quality.py --out DIR [--data digits] [--threads 1]
    python benchmarks/augment_quality.py --out DIR --data PATH/TO/MNIST --per-class 10,50,200,all   # IDX files

Every generator family with labels (ddpm, vae, gan) and the useless `noise` control, n real images per class,
three seeds, k synthetic images per real one; the classifier cells and the generators train for fixed step
budgets, so the figures do not depend on the machine's speed or load (only the minutes do). The experiment
continues where it stopped when run again with the same --out. Prints table.md; the plot is accuracy_vs_n.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genlab.kinds.image.augment import Experiment, NOISE, Plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="digits")
    p.add_argument("--per-class", default="10,50,all")
    p.add_argument("--families", default=f"ddpm,vae,gan,{NOISE}")
    p.add_argument("--k", default="1,4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--gen-steps", type=int, default=1500)
    p.add_argument("--clf-steps", type=int, default=500)
    p.add_argument("--image-size", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    plan = Plan(data=a.data, families=a.families.split(","), k=[int(k) for k in a.k.split(",")],
                per_class=[0 if n == "all" else int(n) for n in a.per_class.split(",")],
                seeds=[int(s) for s in a.seeds.split(",")], gen_steps=a.gen_steps, clf_steps=a.clf_steps,
                image_size=a.image_size, threads=a.threads)
    t0 = time.perf_counter()
    Experiment(plan, a.out).run()
    print((Path(a.out) / "table.md").read_text())
    print(f"{(time.perf_counter() - t0) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
