"""The diffusion U-Net beside diffusers' `UNet2DModel` at the same structure (issue 14, goal 1), in one process:
training steps/s (forward, backward and AdamW on the DDPM loss) and DDIM-50 sampling images/s, both networks driven
by genlab's own DDPM (the same diffusion process, loss and sampler; only the network differs). diffusers is built
with genlab's widths, levels, blocks per level, attention resolutions and GroupNorm groups, so the two have the same
parameter count. Rounds interleave the implementations; the ratio is genlab over diffusers per round, and the
median. `--nchw` adds genlab's U-Net in the NCHW layout it used before channels-last became its default.

    pip install diffusers      # for the comparison only; genlab does not depend on it
    python benchmarks/unet_speed.py [--image-size 32] [--channels 1] [--batch 128] [--rounds 5] [--threads 2] [--nchw]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from common import markdown, peer

from genlab.config import TrainConfig
from genlab.models.diffusion import DDPM, DDPMConfig
from genlab.training.optim import build_optimizers

SIZES = {"small": dict(width=32, channel_mults=[1, 2, 2], num_res_blocks=2, attn_resolutions=[8]),
         "tiny": dict(width=16, channel_mults=[1, 2], num_res_blocks=1, attn_resolutions=[])}


class DiffusersUNet(nn.Module):
    """diffusers' UNet2DModel behind genlab's network call unet(x_t, t, y); labels through its class embedding."""

    def __init__(self, c: DDPMConfig):
        super().__init__()
        UNet2DModel = peer("diffusers").UNet2DModel

        res, down, up = c.image_size, [], []
        for level in range(len(c.channel_mults)):  # genlab halves after every level but the last
            down.append("AttnDownBlock2D" if res in c.attn_resolutions else "DownBlock2D")
            res //= 2 if level < len(c.channel_mults) - 1 else 1
        up = [b.replace("Down", "Up") for b in reversed(down)]
        self.net = UNet2DModel(sample_size=c.image_size, in_channels=c.in_channels, out_channels=c.in_channels,
                               block_out_channels=tuple(c.width * m for m in c.channel_mults),
                               layers_per_block=c.num_res_blocks, down_block_types=tuple(down),
                               up_block_types=tuple(up), norm_num_groups=min(8, c.width), attention_head_dim=32,
                               num_class_embeds=c.num_classes + 1 if c.num_classes else None)
        self.conv_in = self.net.conv_in   # DDPM reads its device from here

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None and self.net.class_embedding is not None:
            y = torch.full((x.shape[0],), self.net.class_embedding.num_embeddings - 1, dtype=torch.long)
        return self.net(x, t, class_labels=y).sample


def models(args) -> dict[str, DDPM]:
    c = DDPMConfig(in_channels=args.channels, image_size=args.image_size, num_classes=args.classes,
                   **SIZES[args.size])
    torch.manual_seed(0)
    out = {"genlab": DDPM(c), "diffusers": DDPM(c)}
    out["diffusers"].unet = DiffusersUNet(c)
    if args.nchw:
        out["genlab NCHW"] = DDPM(c)
        out["genlab NCHW"].unet.to(memory_format=torch.contiguous_format).channels_last = False
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", choices=list(SIZES))
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=128, help="training batch")
    p.add_argument("--sample-n", type=int, default=32, help="images per DDIM-50 call")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nchw", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    nets = models(args)
    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.rand(args.batch, args.channels, args.image_size, args.image_size, generator=g) * 2 - 1,
             "y": torch.randint(args.classes, (args.batch,), generator=g) if args.classes else None}
    batch = {k: v for k, v in batch.items() if v is not None}
    # AdamW as genlab's trainer builds it: fused for standard-layout weights, multi-tensor for channels-last ones
    opts = {k: build_optimizers(m.param_groups(TrainConfig(lr=1e-4)))["main"] for k, m in nets.items()}

    def train_step(name: str) -> None:
        nets[name].train()
        nets[name].loss(batch)["loss"].backward()
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    @torch.no_grad()
    def sample(name: str) -> None:
        nets[name].eval()
        cond = torch.arange(args.sample_n) % args.classes if args.classes else None
        nets[name].sample(args.sample_n, cond=cond, steps=50, generator=torch.Generator().manual_seed(1))

    for name in nets:   # warm-up (oneDNN picks and caches its kernels on the first calls)
        train_step(name)
        sample(name)
    train = {k: [] for k in nets}
    draw = {k: [] for k in nets}
    for r in range(args.rounds):
        for name in nets:
            t = time.perf_counter()
            for _ in range(2):
                train_step(name)
            train[name].append(2 / (time.perf_counter() - t))
            t = time.perf_counter()
            sample(name)
            draw[name].append(args.sample_n / (time.perf_counter() - t))
        print(f"round {r}: " + ", ".join(f"{k} {train[k][-1]:.3g} steps/s {draw[k][-1]:.3g} img/s" for k in nets),
              flush=True)
    rows = []
    for name, m in nets.items():
        row = {"network": name, "params": sum(q.numel() for q in m.unet.parameters()),
               "train steps/s": statistics.median(train[name]), "DDIM-50 img/s": statistics.median(draw[name])}
        if name != "diffusers":
            tr = [a / b for a, b in zip(train[name], train["diffusers"])]
            sa = [a / b for a, b in zip(draw[name], draw["diffusers"])]
            row |= {"train vs diffusers": f"{statistics.median(tr):.2f}x ({min(tr):.2f}-{max(tr):.2f})",
                    "sampling vs diffusers": f"{statistics.median(sa):.2f}x ({min(sa):.2f}-{max(sa):.2f})"}
        rows.append(row)
    print(f"\n{args.size} U-Net, {args.image_size}x{args.image_size}x{args.channels}, {args.classes} classes, fp32, "
          f"{args.threads} threads; training batch {args.batch}; DDIM 50 steps on {args.sample_n} images; "
          f"{args.rounds} interleaved rounds (medians, ratio range)\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
