"""Text throughput: training tokens/s (fp32, bf16) and generation tokens/s (KV cache / hidden state vs
recomputing the context) for gpt and lstm, and, side by side, Hugging Face `transformers`' GPT-2 at the
identical configuration (layers, heads, width, context, batch) in the same bare training loop; then
seq2seq (training pairs/s, translated sentences/s greedy and beam 4) and textclf (training texts/s,
classified texts/s), on their built-in data.

    pip install transformers      # for the comparison only; genlab does not depend on it
    python benchmarks/text_throughput.py [--presets tiny,small] [--steps 30] [--threads 2] [--families ...]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from common import markdown, timed_train

import genlab
from genlab.data.tokenizers import EOS


def bare_loop_rate(model, vocab: int, batch: int, block: int, steps: int, precision: str, hf: bool) -> float:
    """Tokens/s of forward + backward + AdamW on random tokens, the same loop for both implementations."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(4, vocab, (batch, block + 1), generator=torch.Generator().manual_seed(0))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    model.train()
    for i in range(steps + 3):
        if i == 3:
            t = time.perf_counter()
        with ctx:
            loss = model(ids[:, :-1], labels=ids[:, :-1]).loss if hf else model.loss({"ids": ids})["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch * block / (time.perf_counter() - t)


@torch.no_grad()
def generation_rate(model, use_cache: bool, n: int = 8, new: int = 128) -> float:
    model.eval()
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    out = model.sample(n, cond=[EOS], generator=g, max_new_tokens=new, temperature=1.0, use_cache=use_cache)
    return (out.shape[1] - 1) * n / (time.perf_counter() - t)


def hf_gpt2(cfg):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.d_model,
                                      n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout,
                                      embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--families", default="gpt,lstm,seq2seq,textclf")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    families = args.families.split(",")
    for family in [f for f in families if f in ("gpt", "lstm")]:
        for preset in args.presets.split(","):
            for precision in ("fp32", "bf16"):
                run, rate = timed_train(family, "pycode", preset=preset, precision=precision, steps=args.steps,
                                        overrides=[f"train.threads={args.threads}"])
                model = genlab.load(run.path)
                c = model.config
                row = {"family": family, "preset": preset, "precision": precision,
                       "params": sum(q.numel() for q in model.parameters()), "context": c.block_size,
                       "trainer tok/s": rate,
                       "bare loop tok/s": bare_loop_rate(model, c.vocab_size, run.config.train.batch_size,
                                                         c.block_size, args.steps, precision, hf=False)}
                if family == "gpt":
                    try:
                        hf = hf_gpt2(c)
                        row["HF GPT-2 bare loop tok/s"] = bare_loop_rate(hf, c.vocab_size, run.config.train.batch_size,
                                                                         c.block_size, args.steps, precision, hf=True)
                    except ImportError:
                        row["HF GPT-2 bare loop tok/s"] = "transformers not installed"
                if precision == "fp32":
                    row["generate tok/s (cache)"] = generation_rate(model, True)
                    row["generate tok/s (no cache)"] = generation_rate(model, False)
                rows.append(row)
                print(row, flush=True)
    print(f"\n{args.threads} threads, {args.steps} timed steps, batch from each preset, pycode char-level\n")
    print(markdown(rows))
    other = [task_row(f, preset, args) for f in families if f in ("seq2seq", "textclf")
             for preset in args.presets.split(",")]
    if other:
        print(f"\n{args.threads} threads, {args.steps} timed steps; seq2seq on dates-en-de, textclf on docstrings (BPE)\n")
        print(markdown(other))


def task_row(family: str, preset: str, args) -> dict:
    """Training rate and inference rate (sentences or texts per second, batches of 64) of seq2seq or textclf."""
    from genlab.kinds.text.textgen import classify, translate

    data, extra = ("dates-en-de", []) if family == "seq2seq" else ("docstrings", ["data.tokenizer=bpe"])
    run, rate = timed_train(family, data, preset=preset, steps=args.steps,
                            overrides=[f"train.threads={args.threads}", *extra])
    model = genlab.load(run.path)
    row = {"family": family, "preset": preset, "params": sum(q.numel() for q in model.parameters()),
           f"trainer {run.result.unit}/s": rate}
    if family == "seq2seq":
        sources = [f"March {d}, {1990 + d}" for d in range(1, 29)] * 2 + [f"May {d}, 2020" for d in range(1, 9)]
        for beam in (1, 4):
            t = time.perf_counter()
            translate(model, sources, beam=beam)
            row[f"translate sent/s (beam {beam})"] = len(sources) / (time.perf_counter() - t)
    else:
        texts = [f"Return the {w} of the given path, or None when it is missing." for w in
                 ("size", "name", "parent", "suffix", "owner", "mode", "stem", "drive")] * 8
        t = time.perf_counter()
        classify(model, texts)
        row["classify texts/s"] = len(texts) / (time.perf_counter() - t)
    print(row, flush=True)
    return row


if __name__ == "__main__":
    main()
