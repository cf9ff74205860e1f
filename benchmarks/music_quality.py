"""Language models on the Bach chorales: throughput, and quality at a fixed CPU budget.

    python benchmarks/music_quality.py [--families gpt,lstm] [--minutes 10] [--preset small] [-n 64]
                                       [--transpose c] [--throughput-only]

Each family trains on `bach-chorales` (note events, the music tokenizer) for `--minutes` of wall time, then
`genlab eval` composes n new pieces (384 tokens, temperature 1) and scores them against the held-out chorales:
validation bits per token, the overlaps of pitch-class, interval and duration histograms (Yang & Lerch 2020), the
share of notes in the prevailing key, polyphony and notes per bar (with the held-out chorales' own values), and
the share of 8-onset n-grams copied from the training chorales (beside the held-out chorales' own share).
Training tokens/s come from the budget run; sampling tokens/s from composing 16 pieces. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import markdown, timed_train

import genlab
from genlab.kinds.music.compose import MUSIC_TOKENS, compose


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="gpt,lstm")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=None, help="instead of --minutes")
    p.add_argument("--preset", default="small")
    p.add_argument("--transpose", default="c", choices=["c", "none", "augment"])
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--throughput-only", action="store_true", help="60 steps per family, no evaluation")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for family in args.families.split(","):
        budget = {"steps": 60} if args.throughput_only else (
            {"steps": args.steps} if args.steps else {"minutes": args.minutes, "steps": 1_000_000})
        run, rate = timed_train(family, "bach-chorales", preset=args.preset,
                                overrides=[f"train.threads={args.threads}", f"data.transpose={args.transpose}"],
                                **budget)
        model = genlab.load(run.path)
        t = time.perf_counter()
        compose(model, model.run.tokenizer, 16, generator=torch.Generator().manual_seed(0), max_new_tokens=MUSIC_TOKENS)
        row = {"family": family, "preset": args.preset, "params": sum(q.numel() for q in model.parameters()),
               "steps": run.result.step, "train tok/s": rate,
               "sample tok/s": 16 * MUSIC_TOKENS / (time.perf_counter() - t)}
        if not args.throughput_only:
            rep = genlab.evaluate(run.path, n=args.n, progress=False, log=lambda s: None)
            v, floor = {r["metric"]: r["value"] for r in rep["rows"]}, rep["floor"]
            row.update({"bits/token": v["bits_per_token"], "pitch-class overlap": v["pitch_class_overlap"],
                        "interval overlap": v["interval_overlap"], "duration overlap": v["duration_overlap"],
                        "in key": v["in_key_share"], "in key (data)": floor["in_key_share"],
                        "polyphony": v["polyphony"], "polyphony (data)": floor["polyphony"],
                        "notes/bar": v["note_density"], "notes/bar (data)": floor["note_density"],
                        "copied": v["copy_share"], "copied (held-out)": floor["copy_share"],
                        "skipped tokens": v["skipped_token_share"], "run": str(run.path)})
        rows.append(row)
        print(row, flush=True)
    what = "60 steps each" if args.throughput_only else (f"{args.steps} steps" if args.steps else
                                                         f"{args.minutes} min per run")
    print(f"\nbach-chorales (transpose {args.transpose}), {what}, preset {args.preset}, {args.threads} threads, "
          f"N={args.n}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
