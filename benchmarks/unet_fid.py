"""Judge-FID at equal wall-clock: genlab's U-Net against diffusers' `UNet2DModel` (issue 14, goal 1, its second half).

Both networks at the same structure (unet_speed.DiffusersUNet: the same widths, levels, blocks and attention, the same
parameter count), both driven by genlab's DDPM (the same diffusion process, v-prediction loss, AdamW as genlab's
trainer builds it, warmup, a cosine schedule over the budget's time and EMA weights; only the network differs). They
train on the same sequence of batches, in alternating slices of `--slice` seconds, until each has had `--minutes` of
its own training time, so a slow spell of the machine falls on both. Then each draws `-n` samples with the EMA weights
(DDIM, classifier-free guidance), scored in the features of the data's cached judge against the training images,
beside the held-out images' own distance (the floor) at the same N.

    pip install diffusers      # for the comparison only; genlab does not depend on it
    python benchmarks/unet_fid.py [--data digits] [--image-size 0] [--size tiny] [--minutes 3] [-n 180] [--steps 20]

The defaults are the built-in digits at their own 8x8 and the `tiny` U-Net (genlab's `ddpm --preset tiny`): there,
minutes of CPU draw clean digits. unet_speed.py's `small` U-Net at 32x32 trains at under one step per second here,
so a few minutes would compare two networks that cannot draw a digit yet. N = 180 is the held-out split's size, so
the floor is at the same N.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import markdown
from unet_speed import SIZES, DiffusersUNet

from genlab.config import DataConfig, TrainConfig
from genlab.data.sources import split_images
from genlab.evaluation import image_metrics as M
from genlab.kinds.image.judge import get_judge
from genlab.models.base import load_saved_state
from genlab.models.diffusion import DDPM, DDPMConfig
from genlab.training.optim import EMA, build_optimizers, lr_factor, set_lr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--image-size", type=int, default=0, help="resize the data (0 keeps its size)")
    p.add_argument("--size", default="tiny", choices=list(SIZES))
    p.add_argument("--minutes", type=float, default=3.0, help="training time of each network")
    p.add_argument("--slice", type=float, default=15.0, help="seconds per turn before the other network's")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("-n", type=int, default=180)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = DataConfig(name=args.data, image_size=args.image_size, conditional=True)
    ds, train, val = split_images(data)
    judge = get_judge(data, ds=ds, progress=False, log=print)
    c = DDPMConfig(in_channels=ds.images.shape[1], image_size=ds.images.shape[-1], num_classes=len(ds.classes),
                   **SIZES[args.size])
    torch.manual_seed(0)
    nets = {"genlab": DDPM(c), "diffusers": DDPM(c)}
    nets["diffusers"].unet = DiffusersUNet(c)
    opts = {k: build_optimizers(m.param_groups(TrainConfig(lr=args.lr)))["main"] for k, m in nets.items()}
    emas = {k: EMA(m, args.ema) for k, m in nets.items()}
    batches = {k: torch.Generator().manual_seed(1) for k in nets}    # the same batches, in the same order
    spent, steps, budget = {k: 0.0 for k in nets}, {k: 0 for k in nets}, args.minutes * 60

    def step(k: str) -> None:
        m, s = nets[k], steps[k]
        set_lr(opts[k], lr_factor(s, args.warmup, None, 0.1, max(0.0, spent[k] / budget)))
        idx = torch.randint(len(train.images), (args.batch,), generator=batches[k])
        torch.manual_seed(s)                                           # the same noise and timesteps at step s
        m.loss({"x": train.images[idx], "y": train.labels[idx]})["loss"].backward()
        opts[k].step()
        opts[k].zero_grad(set_to_none=True)
        steps[k] += 1
        emas[k].update(m, steps[k])

    for m in nets.values():
        m.train()
    while any(spent[k] < budget for k in nets):
        for k in nets:
            t0 = time.perf_counter()
            while spent[k] < budget and time.perf_counter() - t0 < args.slice:
                t = time.perf_counter()
                step(k)
                spent[k] += time.perf_counter() - t
        print(", ".join(f"{k}: {steps[k]} steps in {spent[k]:.0f} s" for k in nets), flush=True)

    real = judge.features(train.images)
    floor = M.fid(real, judge.features(val.images[:args.n]))
    rows = []
    for k, m in nets.items():
        load_saved_state(m, emas[k].state)
        m.eval()
        labels = torch.arange(args.n) % c.num_classes
        t = time.perf_counter()
        with torch.no_grad():
            x = torch.cat([m.sample(len(y), cond=y, steps=args.steps, guidance=args.guidance,
                                    generator=torch.Generator().manual_seed(i)) for i, y in enumerate(labels.split(100))])
        rate = args.n / (time.perf_counter() - t)
        rows.append({"network": k, "params": sum(q.numel() for q in m.unet.parameters()), "train s": round(spent[k]),
                     "steps": steps[k], "steps/s": steps[k] / spent[k], f"FID (floor {floor:.1f})":
                     M.fid(real, judge.features(x)), "cond. acc": float((judge.probs(x).argmax(1) == labels.numpy()).mean()),
                     f"DDIM-{args.steps} img/s": rate})
    print(f"\n{args.size} U-Net on {args.data} at {c.image_size}x{c.image_size}x{c.in_channels}, {args.minutes} min of "
          f"training each (alternating {args.slice:g} s slices), batch {args.batch}, lr {args.lr}, EMA {args.ema}; "
          f"N = {args.n}, DDIM {args.steps} steps, guidance {args.guidance}, {args.threads} threads\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
