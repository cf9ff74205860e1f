"""Adapting a trained run to new data (issue 15): adapted (whole, LoRA) against from scratch and against the base,
with forgetting, for one image and one text family.

    python benchmarks/adapt_quality.py [--base-minutes 4] [--minutes 1.5] [--threads 2] [--only image,text]

image (ddpm, conditional, digits): the base trains on the classes 0-7 only. The new data is every class with
  10 training images each (data.per_class=10): two classes it never saw, a little of the old ones. Each
  condition gets --minutes on it: fine-tuning the whole base, LoRA adapters on the frozen base (rank 8), and
  the same architecture from scratch. Judged in the digits judge's features (all ten classes) on 50 samples per
  class against the held-out split: conditional accuracy and FID for the new classes (8, 9) and for the old ones
  (0-7); the base's figures on the old classes are what forgetting is measured against.
text (gpt, character level): the base trains on `pycode` (the standard library's code). The new data is
  prose the base never read: the Python reference manual's text that ships inside the standard library
  (pydoc_data/topics.py, which pycode leaves out), one document per topic, split by documents. Bits per
  character on the held-out prose, and on held-out pycode for forgetting.

Prints Markdown tables; the figures in RESULTS.md come from it.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch
from pydoc_data.topics import topics

from common import markdown, timed_train

import genlab
from genlab.config import DataConfig
from genlab.data import load_images, split
from genlab.data import text_loader as L
from genlab.data.text import load_text
from genlab.evaluation import image_metrics as M
from genlab.kinds.image.judge import get_judge

OLD, NEW = [str(i) for i in range(8)], ["8", "9"]


@torch.no_grad()
def image_scores(model, judge, val) -> dict:
    """Conditional accuracy and judge FID for the new and the old classes (50 samples per class)."""
    names = list(model.run.classes)
    out = {}
    for group, classes in (("new", NEW), ("old", OLD)):
        if not set(classes) <= set(names):
            out |= {f"{group} acc": None, f"{group} FID": None}
            continue
        labels = torch.tensor([names.index(c) for c in classes]).repeat_interleave(50)
        x = model.sample(len(labels), cond=labels, generator=torch.Generator().manual_seed(0), steps=50)
        truth = torch.tensor([int(c) for c in classes]).repeat_interleave(50)   # the judge's labels are 0..9
        real = val.images[torch.isin(val.labels, truth.unique())]
        out[f"{group} acc"] = float((torch.from_numpy(judge.probs(x).argmax(1)) == truth).float().mean())
        out[f"{group} FID"] = M.fid(judge.features(real), judge.features(x))
    return out


def image_table(args, work: Path) -> str:
    judge = get_judge(DataConfig(name="digits"), progress=False, log=lambda s: None)
    _, val = split(load_images(DataConfig(name="digits")), 0.1, 0)
    base, _ = timed_train("ddpm", "digits", preset="tiny", minutes=args.base_minutes, out=work / "ddpm-base",
                          overrides=[*args.common, "data.conditional=true", f"data.classes={','.join(OLD)}",
                                     "train.ema=0.999"])
    few = [*args.common, "data.per_class=10", "train.batch_size=32", "train.ema=0.99"]
    runs = {"base (0-7), not adapted": base.path}
    for name, kw, extra in (("fine-tuned (whole)", {"init_from": base.path}, []),
                            ("LoRA r=8 (frozen base)", {"init_from": base.path, "adapter": "lora"},
                             ["adapter.rank=8", "train.lr=3e-3"]),
                            ("from scratch", {"conditional": True}, [])):
        run, _ = timed_train("ddpm", "digits", preset="tiny", minutes=args.minutes, out=work / name.split()[0],
                             overrides=[*few, *extra], **kw)
        runs[name] = run.path
    rows = []
    for name, path in runs.items():
        model = genlab.load(path)
        rows.append({"ddpm": name, "trained params": _trainable(path), **image_scores(model, judge, val)})
    return markdown(rows)


def prose_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in topics.items():
        (folder / f"{name}.txt").write_text(text)
    return folder


@torch.no_grad()
def bits_per_char(model, texts: list[str]) -> float:
    tok = model.run.tokenizer
    ids = L.encode_corpus(texts, tok)
    losses, chars = [], 0
    for batch in L.eval_lm(ids, model.config.block_size, 32, "cpu", limit=256):
        targets = batch["ids"][:, 1:].numel()   # one character a token: nats per token are nats per character
        losses.append(float(model.loss(batch)["loss"]) * targets)
        chars += targets
    return sum(losses) / chars / math.log(2)


def text_table(args, work: Path) -> str:
    prose = prose_corpus(work / "prose")
    prose_val = load_text(DataConfig(name=str(prose)), "lm").val
    code_val = load_text(DataConfig(name="pycode"), "lm").val
    base, _ = timed_train("gpt", "pycode", preset="small", minutes=args.base_minutes, out=work / "gpt-base",
                          overrides=[*args.common, "train.ema=0.999"])
    runs = {"base (pycode), not adapted": base.path}
    for name, kw, extra in (("fine-tuned (whole)", {"init_from": base.path}, ["train.lr=3e-4"]),
                            ("LoRA r=8 (frozen base)", {"init_from": base.path, "adapter": "lora"},
                             ["adapter.rank=8", "train.lr=2e-3"]),
                            ("from scratch", {}, [])):
        run, _ = timed_train("gpt", str(prose), preset="small", minutes=args.minutes, out=work / f"gpt-{name.split()[0]}",
                             overrides=[*args.common, *extra], **kw)
        runs[name] = run.path
    rows = []
    for name, path in runs.items():
        model = genlab.load(path)
        rows.append({"gpt": name, "trained params": _trainable(path), "prose bits/char": bits_per_char(model, prose_val),
                     "pycode bits/char": bits_per_char(model, code_val)})
    return markdown(rows)


def _trainable(run: Path) -> int:
    info = json.loads((run / "checkpoint.json").read_text())
    return info.get("trainable_parameters") or info.get("parameters")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-minutes", type=float, default=4.0)
    p.add_argument("--minutes", type=float, default=1.5, help="each adaptation's (and the scratch run's) budget")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--only", default="image,text")
    p.add_argument("--work", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.common = [f"train.threads={args.threads}"]
    work = Path(args.work or tempfile.mkdtemp(prefix="genlab-adapt-"))
    for part, table in (("image", image_table), ("text", text_table)):
        if part in args.only.split(","):
            print(f"\n{part}: base {args.base_minutes} min, each adaptation {args.minutes} min\n\n{table(args, work)}",
                  flush=True)


if __name__ == "__main__":
    main()
