"""video-ddpm on moving-shapes: throughput beside diffusers' space-time U-Net, and quality at a fixed CPU budget.

    python benchmarks/video_quality.py --throughput-only [--threads 2]
    python benchmarks/video_quality.py --minutes 15 [--preset tiny] [--precision bf16] [-n 200] [--steps-ddim 20]
                                       [--threads 2]

Throughput: genlab's training clips/s (fp32 and bf16, from the trainer) and sampling clips/s (DDIM 20, guidance 2)
for the tiny and small presets and the videoclf judge; then, in the same process on the same batch, one training
step (forward and backward) of genlab's space-time U-Net and of diffusers' UNet3DConditionModel (the U-Net of its
text-to-video pipelines: spatial transformers and temporal transformers and convolutions) at the same widths,
levels and blocks per level, as a ratio. diffusers is a benchmark-only install (pip install diffusers).

Quality: a class-conditional run for --minutes of wall time on moving-shapes (16 frames of 32x32), then
`genlab eval` in the video judge's features at equal N against the real-vs-real floor: judge-FVD (not comparable
with published FVD, which needs I3D weights), KID, precision/recall, coverage, conditional accuracy, the judge's
order score, the per-frame FID, the frame-to-frame change distance and the straight-and-bounce share; and a
filmstrip of one sample per class. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import markdown, peer, sampling_rate, timed_train

import genlab
from genlab.kinds.video.prepare import write_clips
from genlab.provenance import VIDEO_COMMENT, image_metadata
from genlab.registry import model_config

DATA = ["data.count=2000"]
CONTROLS = {"sampler": "ddim", "steps": 20, "guidance": 2.0}


def peer_ratio(preset: str, batch: int = 8, repeats: int = 3) -> dict:
    """One fwd+bwd step of genlab's U-Net and of diffusers' UNet3DConditionModel at the same shape, clips/s."""
    UNet3DConditionModel = peer("diffusers").UNet3DConditionModel

    from genlab.models.video_diffusion import VideoDDPM

    cfg = model_config("video-ddpm", preset, in_channels=3, image_size=32, frames=16, num_classes=4)
    ours = VideoDDPM(cfg).unet
    chans = tuple(cfg.width * m for m in cfg.channel_mults)
    theirs = UNet3DConditionModel(
        sample_size=32, in_channels=7, out_channels=3, block_out_channels=chans, layers_per_block=cfg.num_res_blocks,
        down_block_types=("DownBlock3D",) + ("CrossAttnDownBlock3D",) * (len(chans) - 1),
        up_block_types=("CrossAttnUpBlock3D",) * (len(chans) - 1) + ("UpBlock3D",), norm_num_groups=8,
        cross_attention_dim=4 * cfg.width, attention_head_dim=8)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(batch, 16, 7, 32, 32, generator=g), torch.randint(0, 1000, (batch,), generator=g)
    y, context = torch.arange(batch) % 4, torch.randn(batch, 1, 4 * cfg.width, generator=g)
    steps = {"genlab": lambda: ours(x, t, y), "diffusers": lambda: theirs(x.transpose(1, 2), t,
                                                                         encoder_hidden_states=context).sample}
    rate = {}
    for name, fn in steps.items():
        fn().square().mean().backward()   # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn().square().mean().backward()
            best = min(best, time.perf_counter() - start)
        rate[name] = batch / best
    return {"preset": preset, "genlab params": sum(p.numel() for p in ours.parameters()),
            "diffusers params": sum(p.numel() for p in theirs.parameters()),
            "genlab clips/s": rate["genlab"], "diffusers clips/s": rate["diffusers"],
            "ratio": rate["genlab"] / rate["diffusers"]}


def throughput(threads: int) -> None:
    rows = []
    for family, preset in (("video-ddpm", "tiny"), ("video-ddpm", "small"), ("videoclf", "small")):
        over = [*DATA, f"train.threads={threads}"]
        run, fp32 = timed_train(family, "moving-shapes", preset=preset, steps=30, conditional=True, overrides=over)
        _, bf16 = timed_train(family, "moving-shapes", preset=preset, steps=30, precision="bf16", conditional=True,
                              overrides=over)
        model = genlab.load(run.path)
        rows.append({"family": family, "preset": preset, "params": sum(p.numel() for p in model.parameters()),
                     "train clips/s fp32": fp32, "train clips/s bf16": bf16,
                     "sample clips/s (DDIM 20, guidance 2)": sampling_rate(model, 8, repeats=1, **CONTROLS)
                     if model.generative else None})
        print(rows[-1], flush=True)
    print(f"\nmoving-shapes (16 frames of 32x32 RGB), conditional, 30 steps, {threads} threads\n")
    print(markdown(rows))
    peers = [peer_ratio(p) for p in ("tiny", "small")]
    print("\none training step (forward + backward) of the U-Net alone, batch 8, same process\n")
    print(markdown(peers))


def quality(args) -> None:
    budget = {"steps": args.steps} if args.steps else {"minutes": args.minutes, "steps": 1_000_000}
    run, rate = timed_train("video-ddpm", "moving-shapes", preset=args.preset, conditional=True,
                            precision=args.precision, overrides=[*DATA, f"train.threads={args.threads}"], **budget)
    controls = {**CONTROLS, "steps": args.steps_ddim}
    start = time.perf_counter()
    rep = genlab.evaluate(run.path, n=args.n, controls=controls, progress=False, log=lambda s: None)
    v = {r["metric"]: r for r in rep["rows"]}
    model = genlab.load(run.path)
    clips = model.sample(4, cond=torch.arange(4), generator=torch.Generator().manual_seed(0), **controls)
    strip = run.path / "filmstrip.gif"
    write_clips(clips, model.config.fps, strip, image_metadata(model, seed=0, settings=controls,
                                                                comment=VIDEO_COMMENT), nrow=4)
    rows = [{"metric": k, "value": v[k]["value"], "N": v[k]["n_samples"],
             "real-vs-real floor": v[k].get("floor", rep["floor"].get(k.removesuffix("@floor_n")))}
            for k in ("fvd@floor_n", "kid@floor_n", "precision", "recall", "coverage@floor_n",
                      "conditional_accuracy", "order_score", "frame_fid", "temporal_change_w1", "plausible_motion",
                      "memorisation") if k in v]
    what = f"{args.steps} steps" if args.steps else f"{args.minutes} min"
    print(f"\nvideo-ddpm {args.preset} {args.precision} on moving-shapes, {what} ({run.result.step} steps, "
          f"{rate:.1f} clips/s), "
          f"{args.threads} threads; eval N={args.n}, DDIM {args.steps_ddim}, guidance 2 "
          f"({time.perf_counter() - start:.0f} s with the judges); judge held-out accuracy "
          f"{rep['judge']['heldout_accuracy']:.3f}\n")
    print(markdown(rows))
    print(f"\nfilmstrip (one sample per shape, rows circle/square/triangle/star): {strip.with_suffix('.png')}; run "
          f"folder: {run.path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--steps", type=int, default=None, help="instead of --minutes")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="of the budget run")
    p.add_argument("--steps-ddim", type=int, default=20)
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--throughput-only", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.throughput_only:
        throughput(args.threads)
    else:
        quality(args)


if __name__ == "__main__":
    main()
