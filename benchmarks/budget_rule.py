"""`genlab train gpt --minutes M` with no preset (the budget rule) against nanoGPT's CPU recipe configuration trained
for the same wall time, on character corpora (issue 14, goal 3).

    python benchmarks/budget_rule.py --corpora pycode,pydocs --minutes 1.5,10 --jobs 2

Each (corpus, budget) trains two runs through the CLI, each its own process: "recipe" is nanoGPT's CPU recipe
(README: 4 layers x 4 heads x 128, learned positions, context 64, batch 12, lr 1e-3, warmup 100, cosine to 1e-4,
beta2 0.99, weight decay 0.1, dropout 0) under the same `--minutes`, so its cosine follows the same clock; "genlab" is
`--minutes M` alone. Both are scored on the same held-out text: the first --eval-chars characters of the
validation split, in non-overlapping windows of each model's own context, in nats per character (character
tokenizer). --jobs 2 runs the two of a pair at once, one thread each, so they share the machine alike;
--jobs 1 runs them one after the other with --threads threads. --candidate NAME=key=value,key=value adds runs
with those `--set` overrides (how the rule was searched).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import markdown

from genlab.data import text_loader as L
from genlab.data.text import load_text
from genlab.data.tokenizers import run_tokenizer
from genlab.loading import load, load_config

RECIPE = ["model.n_layer=4", "model.n_head=4", "model.d_model=128", "model.block_size=64", "model.dropout=0",
          "model.pos=learned", "train.batch_size=12", "train.lr=1e-3", "train.warmup_steps=100", "train.min_lr_ratio=0.1",
          "train.beta2=0.99", "train.weight_decay=0.1"]


def train_command(corpus: str, minutes: float, out: Path, overrides: list[str] | None, threads: int) -> list[str]:
    cmd = [sys.executable, "-m", "genlab", "train", "gpt", "--data", corpus, "--minutes", str(minutes),
           "--out", str(out), "--no-progress", "--set", f"train.threads={threads}"]
    if overrides is not None:  # over the small preset's defaults, so that the budget rule does not apply
        cmd += ["--preset", "small"] + [a for o in overrides for a in ("--set", o)]
    return cmd


@torch.no_grad()
def held_out_loss(run_dir: Path, eval_chars: int) -> float:
    """Mean next-character loss (nats) over the first eval_chars characters of the run's validation split."""
    cfg = load_config(run_dir)
    model = load(run_dir)
    tok = run_tokenizer(run_dir, cfg.model.vocab_size)
    data = load_text(cfg.data, "lm")
    ids = L.encode_corpus(data.val, tok)[: eval_chars + 1]
    total, n = 0.0, 0
    for batch in L.eval_lm(ids, cfg.model.block_size, 64):
        k = batch["ids"].shape[0] * (batch["ids"].shape[1] - 1)
        total += float(model.loss(batch)["loss"]) * k
        n += k
    return total / n


def run_all(jobs: list[tuple[str, list[str], int]], parallel: int) -> None:
    """Run (name, command, threads) jobs, `parallel` at a time; stop at the first failure."""
    for i in range(0, len(jobs), parallel):
        procs = []
        for name, cmd, threads in jobs[i:i + parallel]:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            print(f"  start {name}", flush=True)
            procs.append((name, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                 text=True)))
        for name, p in procs:
            out, _ = p.communicate()
            if p.returncode:
                sys.exit(f"{name} failed:\n{out[-3000:]}")


def summary(run_dir: Path, eval_chars: int) -> dict:
    cfg = load_config(run_dir)
    m, t = cfg.model, cfg.train
    ckpt = json.loads((run_dir / "checkpoint.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    wall = max((r.get("time", 0.0) for r in rows), default=0.0)
    return {"model": f"{m.n_layer}x{m.n_head}x{m.d_model}", "context": m.block_size, "batch": t.batch_size,
            "lr": t.lr, "steps": ckpt["step"], "train s": round(wall), "held-out nats/char":
            round(held_out_loss(run_dir, eval_chars), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="pycode,pydocs")
    ap.add_argument("--minutes", default="1.5,10", help="comma-separated budgets")
    ap.add_argument("--jobs", type=int, default=2, choices=[1, 2])
    ap.add_argument("--threads", type=int, default=2, help="threads per run with --jobs 1 (--jobs 2: one each)")
    ap.add_argument("--eval-chars", type=int, default=100_000)
    ap.add_argument("--no-recipe", action="store_true", help="skip the recipe runs")
    ap.add_argument("--no-genlab", action="store_true", help="skip the budget-rule runs")
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=k=v,k=v")
    ap.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="genlab-budget-"))
    threads = 1 if args.jobs == 2 else args.threads
    variants = ([] if args.no_recipe else [("recipe", RECIPE)]) + ([] if args.no_genlab else [("genlab", None)])
    for c in args.candidate:
        name, _, sets = c.partition("=")
        variants.append((name, [s for s in sets.split(",") if s]))
    table = []
    for corpus in args.corpora.split(","):
        for minutes in map(float, args.minutes.split(",")):
            print(f"{corpus}, {minutes:g} min", flush=True)
            jobs = [(f"{corpus}/{minutes:g}/{name}",
                     train_command(corpus, minutes, out / f"{corpus}-{minutes:g}-{name}", sets, threads), threads)
                    for name, sets in variants]
            run_all(jobs, args.jobs)
            base = None
            for name, _ in variants:
                row = {"corpus": corpus, "budget (min)": minutes, "run": name,
                       **summary(out / f"{corpus}-{minutes:g}-{name}", args.eval_chars)}
                base = row["held-out nats/char"] if name == "recipe" else base
                if base is not None and name != "recipe":
                    row["vs recipe"] = round(row["held-out nats/char"] - base, 4)
                table.append(row)
                print(f"  {row}", flush=True)
    print(markdown(table))
    print(f"runs in {out}")


if __name__ == "__main__":
    main()
