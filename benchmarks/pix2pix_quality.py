"""pix2pix against the L1-only U-Net (issue 13): the same generator, data and steps, with and without the
adversarial term, on built-in paired tasks; what the PatchGAN buys.

    python benchmarks/pix2pix_quality.py [--tasks edges2shapes] [--steps 2000] [--threads 2] [--grid DIR]

Each model trains `--steps` steps (preset small: U-Net width 32, PatchGAN 16x16, batch 32, 32x32 images), then
`genlab eval` scores its translations of the held-out inputs: L1, PSNR, SSIM against the targets; judge-FID, KID,
precision, recall of the outputs against the training targets (beside the held-out targets' floor), and the
FCN-score (the judge's accuracy on the outputs, beside its accuracy on the targets). Also training pairs/s and
translation pairs/s. --grid writes rows of input | L1-only | pix2pix | target per task.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from common import markdown, sampling_rate, timed_train

import genlab
from genlab.config import DataConfig
from genlab.data.image_pairs import split_pairs
from genlab.imageio import save_grid

METRICS = ("l1", "psnr", "ssim", "fid", "kid", "precision", "recall", "coverage", "fcn_score")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="edges2shapes")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--grid", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    root = Path(tempfile.mkdtemp(prefix="genlab-pix2pix-"))
    for task in a.tasks.split(","):
        outputs = {}
        _, _, val = split_pairs(DataConfig(name=task))
        for name, extra in (("L1-only U-Net", ["model.gan_weight=0"]), ("pix2pix (cGAN + 100 L1)", [])):
            run, rate = timed_train("pix2pix", task, preset="small", steps=a.steps, out=root / f"{task}-{len(outputs)}",
                                    overrides=[f"train.threads={a.threads}", *extra])
            model = genlab.load(run.path)
            report = genlab.evaluate(run.path, progress=False, log=lambda s: None)
            got = {r["metric"]: r for r in report["rows"]}
            rows.append({"task": task, "model": name, "steps": a.steps, "train pairs/s": rate,
                         "translate pairs/s": sampling_rate(model, 256, inputs=val.a),
                         **{m: got[m]["value"] for m in METRICS}})
            floors = {m: got[m].get("floor") for m in METRICS}
            outputs[name] = model.sample(8, cond=val.a[:8], generator=torch.Generator().manual_seed(0))
        rows.append({"task": task, "model": "held-out targets (floor)", **{m: v for m, v in floors.items() if v is not None}})
        if a.grid:
            images = [val.a[:8], *outputs.values(), val.b[:8]]
            images = [x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x for x in images]
            save_grid(torch.stack(images, 1).flatten(0, 1), Path(a.grid) / f"pix2pix-{task}.png", nrow=len(images))
    print(markdown(rows))


if __name__ == "__main__":
    main()
