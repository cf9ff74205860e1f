"""Text families on the built-in corpora for a wall budget each, then `genlab eval`.

    python benchmarks/text_quality.py [--gpt-minutes 10] [--seq2seq-minutes 5] [--textclf-minutes 3]

Prints: gpt on pycode (validation bits/char, share of parseable snippets, two generations), seq2seq
on dates-en-de (BLEU, chrF, exact match), textclf on docstrings (accuracy and macro-F1 vs the
bag-of-words baseline).
"""

from __future__ import annotations

import argparse

import torch

from common import markdown, timed_train

import genlab
from genlab.kinds.text.textgen import generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpt-minutes", type=float, default=10)
    p.add_argument("--seq2seq-minutes", type=float, default=5)
    p.add_argument("--textclf-minutes", type=float, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default="/tmp/genlab-text-quality")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    plan = [("gpt", "pycode", "small", args.gpt_minutes, {"temperature": 0.8, "top_p": 0.95}, []),
            ("seq2seq", "dates-en-de", "tiny", args.seq2seq_minutes, {}, []),
            # BPE words instead of characters: a third of the sequence length, and word-level features
            ("textclf", "docstrings", "small", args.textclf_minutes, {},
             ["data.tokenizer=bpe", "data.vocab_size=2000", "model.max_len=128"])]
    for family, data, preset, minutes, controls, extra in plan:
        if minutes <= 0:
            continue
        run, rate = timed_train(family, data, preset=preset, minutes=minutes, out=f"{args.out}/{family}-{data}",
                                overrides=[f"train.threads={args.threads}", "train.log_every=50", *extra])
        rep = genlab.evaluate(run.path, n=64, controls=controls, progress=False, log=lambda s: None)
        row = {"family": family, "data": data, "preset": preset, "minutes": minutes, "steps": run.result.step,
               f"train {run.result.unit}/s": rate}
        row.update({r["metric"]: r["value"] for r in rep["rows"]})
        rows.append(row)
        print(row, flush=True)
        if family == "gpt":
            for text in generate(run.path, "def ", 2, seed=0, max_new_tokens=300, **controls):
                print("-----\n" + text)
    for r in rows:
        print("\n" + markdown([r]))


if __name__ == "__main__":
    main()
