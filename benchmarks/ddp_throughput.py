"""DDP scaling on CPU: the same training with 1 and 2 torchrun processes (gloo), global batch fixed.

    python benchmarks/ddp_throughput.py [--family vae] [--steps 200]

Each process gets batch/world images per step, so the work per step is the same; throughput is
read from the trainer's own items/s in metrics.jsonl (after the first logged window).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import markdown

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run(world: int, family: str, data: str, steps: int, batch: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="genlab-ddp-")) / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", "-m", "genlab",
           "train", family, "--data", data, "--preset", "small", "--steps", str(steps), "--out", str(out),
           "--no-progress", "--set", f"train.batch_size={batch // world}", "--set", "train.log_every=20",
           "--set", "train.val_every=100000", "--set", "train.sample_every=100000", "--set", "train.threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    rates = [json.loads(line)["items_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "items_per_s" in line][1:]
    return sum(rates) / len(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="vae")
    p.add_argument("--data", default="digits")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=128, help="global batch (split across processes)")
    args = p.parse_args()
    rows = []
    for world in (1, 2):
        rate = run(world, args.family, args.data, args.steps, args.batch)
        rows.append({"processes": world, "global batch": args.batch, "train img/s": rate,
                     "speed-up": rate / rows[0]["train img/s"] if rows else 1.0})
        print(rows[-1], flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
