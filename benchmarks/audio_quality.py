"""Audio families on spoken digits: throughput, and quality at a fixed CPU budget.

    python benchmarks/audio_quality.py [--families wavegan,audio-ddpm] [--minutes 15] [--precision bf16] [-n 500]
                                       [--steps-ddim 50] [--throughput-only]

Each family trains class-conditionally (`--precision`: bf16 is several times faster on CPUs with AMX) for
`--minutes` of wall time on `spoken-digits` (8 kHz, 1 s), then
`genlab eval` scores it in the audio judge's features at equal N against the real-vs-real floor: judge-FAD
(not comparable with published FAD, which needs VGGish weights), KID, precision/recall, coverage, the judge's
Inception Score (beside the real clips' own IS), conditional accuracy and memorisation. Training clips/s come
from the budget run and a short bf16 run; sampling clips/s from `model.sample`. Prints one Markdown table.
"""

from __future__ import annotations

import argparse

import torch

from common import markdown, sampling_rate, timed_train

import genlab
from genlab.data.audio import load_audio
from genlab.data.images import split
from genlab.evaluation import image_metrics as M
from genlab.kinds.audio.judge import get_judge
from genlab.loading import load_config

CONTROLS = {"audio-ddpm": {"sampler": "ddim", "steps": 50, "guidance": 2.0}}   # --steps-ddim changes the steps


def real_inception_score(run_path) -> float:
    """The judge's Inception Score of the real held-out clips: the ceiling a generator's IS is read against."""
    cfg = load_config(run_path)
    ds = load_audio(cfg.data)
    _, val = split(ds, cfg.data.val_fraction, cfg.data.seed)
    judge = get_judge(cfg.data, ds=ds, progress=False, log=lambda s: None)
    return M.inception_score(judge.probs(val.waves[:, None]))[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="wavegan,audio-ddpm")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--steps", type=int, default=None, help="instead of --minutes")
    p.add_argument("--preset", default="small")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="of the budget run")
    p.add_argument("--steps-ddim", type=int, default=50, help="audio-ddpm's sampling steps in the evaluation")
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--throughput-only", action="store_true", help="60 steps per family, no evaluation")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    CONTROLS["audio-ddpm"]["steps"] = args.steps_ddim
    rows = []
    for family in args.families.split(","):
        budget = {"steps": 60} if args.throughput_only else (
            {"steps": args.steps} if args.steps else {"minutes": args.minutes, "steps": 1_000_000})
        run, rate = timed_train(family, "spoken-digits", preset=args.preset, conditional=True,
                                precision=args.precision, overrides=[f"train.threads={args.threads}"], **budget)
        model = genlab.load(run.path)
        _, bf16 = timed_train(family, "spoken-digits", preset=args.preset, steps=20, precision="bf16",
                              conditional=True, overrides=[f"train.threads={args.threads}"])
        row = {"family": family, "preset": args.preset, "params": sum(q.numel() for q in model.parameters()),
               "steps": run.result.step, "train clips/s": rate, "bf16 train clips/s": bf16,
               "sample clips/s": sampling_rate(model, 16, repeats=1, **CONTROLS.get(family, {}))}
        if not args.throughput_only:
            rep = genlab.evaluate(run.path, n=args.n, controls=CONTROLS.get(family), progress=False,
                                  log=lambda s: None)
            v = {r["metric"]: r["value"] for r in rep["rows"]}
            row.update({"judge-FAD": v["fad"], "FAD@floor N": v["fad@floor_n"], "floor FAD": rep["floor"]["fad"],
                        "KID": v["kid"], "precision": v["precision"], "recall": v["recall"],
                        "coverage": v["coverage"], "IS": v["inception_score"],
                        "real IS": real_inception_score(run.path), "cond. acc": v["conditional_accuracy"],
                        "memorised": v["memorisation"], "run": str(run.path)})
        rows.append(row)
        print(row, flush=True)
    what = "60 steps each" if args.throughput_only else (f"{args.steps} steps" if args.steps else
                                                         f"{args.minutes} min per run")
    print(f"\nspoken-digits, {what}, preset {args.preset}, {args.threads} threads, N={args.n}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
