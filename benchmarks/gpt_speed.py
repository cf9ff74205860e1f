"""GPT speed against the loop a user would otherwise write (issue 14, goal 4), side by side in one process:

1. training tokens/s: genlab's training step (the trainer's `Stepper`: forward, NaN check, backward, clipping,
   AdamW as genlab builds it) on the run's own batches, against a plain PyTorch loop that follows nanoGPT's recipe
   (benchmarks/nanogpt_loop.py) at the identical model and batch configuration on the same token stream, in blocks
   of 5 steps that alternate for --rounds rounds (so both see the machine alike; whole runs one after the other
   differed by +-20% on this shared two-core machine). Also `genlab train`'s own figure for a 150-step run (its
   first steps and logging included);
2. generation tokens/s with the KV cache against recomputation (`use_cache=False`) for a trained run of each
   configuration, at 256 new tokens (past the 64- or 128-token training window), for n = 1, 8 and 32 sequences
   generated together.

    python benchmarks/gpt_speed.py [--configs recipe,small] [--steps 150] [--rounds 3] [--threads 2] [-n 1,8,32]
"""

from __future__ import annotations

import argparse
import time

import torch

from common import alternate, markdown, timed_train

import genlab
from genlab import registry
from genlab.data import text_loader
from genlab.data.tokenizers import EOS, run_tokenizer
from genlab.kinds.text.prepare import text_data
from genlab.training.distributed import Dist
from genlab.training.optim import build_optimizers, lr_factor, set_lr
from genlab.training.trainer import Stepper
from nanogpt_loop import NanoLoop

# (layers, heads, width, context, batch, lr): nanoGPT's CPU recipe (README, "I only have a macbook") and the
# `small` preset's sizes; dropout 0 in both implementations.
CONFIGS = {"recipe": (4, 4, 128, 64, 12, 1e-3), "small": (4, 4, 128, 128, 32, 6e-4)}


def overrides(cfg: tuple, threads: int) -> list[str]:
    n_layer, n_head, d, block, batch, lr = cfg
    return [f"model.n_layer={n_layer}", f"model.n_head={n_head}", f"model.d_model={d}", f"model.block_size={block}",
            "model.dropout=0.0", f"train.batch_size={batch}", f"train.lr={lr}", "train.beta2=0.99",
            "train.weight_decay=0.1", f"train.threads={threads}"]


def genlab_steps(model_cfg, train_cfg, stream: torch.Tensor):
    """genlab's training step as the trainer runs it, for a fresh GPT of model_cfg: steps(k) runs k."""
    torch.manual_seed(0)
    model = registry.build("gpt", model_cfg).train()
    groups = model.param_groups(train_cfg)
    opts = build_optimizers(groups)
    stepper = Stepper(model, groups, opts, train_cfg, Dist())
    loader = text_loader.LMStream(stream, model_cfg.block_size, train_cfg.batch_size, train_cfg.seed)
    i = 0

    def steps(k: int) -> None:
        nonlocal i
        for _ in range(k):
            set_lr(opts["main"], lr_factor(i, train_cfg.warmup_steps, train_cfg.steps, train_cfg.min_lr_ratio))
            model.train_step(loader.batch(i), stepper)
            i += 1
    return steps


@torch.no_grad()
def generation_rate(model, use_cache: bool, n: int, new: int) -> float:
    model.eval()
    t = time.perf_counter()
    out = model.sample(n, cond=[EOS], generator=torch.Generator().manual_seed(0), max_new_tokens=new,
                       temperature=1.0, use_cache=use_cache)
    return (out.shape[1] - 1) * n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="recipe,small")
    p.add_argument("--steps", type=int, default=150, help="steps of the `genlab train` run")
    p.add_argument("--rounds", type=int, default=20, help="alternating blocks of 5 steps per implementation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("-n", default="1,8,32", help="numbers of sequences generated together")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows, gen_rows = [], []
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        n_layer, n_head, d, block, batch, lr = cfg
        run, trainer_rate = timed_train("gpt", "pycode", preset="small", steps=args.steps,
                                        overrides=overrides(cfg, args.threads))
        tok = run_tokenizer(run.path, run.config.model.vocab_size)   # the same training tokens for both
        stream = text_loader.encode_corpus(text_data(run.config).train, tok)
        impl = {"genlab": genlab_steps(run.config.model, run.config.train, stream),
                "nanoGPT": NanoLoop(stream, run.config.model.vocab_size, block, n_layer, n_head, d, batch, lr=lr).steps}
        for f in impl.values():
            f(5)   # warm-up: the first steps pick and cache kernels
        spent = alternate(impl, args.rounds)
        rate = {k: 5 * args.rounds * batch * block / sum(v) for k, v in spent.items()}
        per_round = sorted(b / a for a, b in zip(spent["genlab"], spent["nanoGPT"]))
        model = genlab.load(run.path)
        rows.append({"config": name, "layers x heads x width": f"{n_layer}x{n_head}x{d}", "context": block,
                     "batch": batch, "positions": model.config.pos,
                     "genlab step tok/s": rate["genlab"], "nanoGPT loop tok/s": rate["nanoGPT"],
                     "ratio": f"{rate['genlab'] / rate['nanoGPT']:.2f}x",
                     "rounds' ratios (quartiles)": " ".join(f"{per_round[int(q * (len(per_round) - 1))]:.2f}"
                                                          for q in (0.25, 0.5, 0.75)),
                     f"genlab train ({args.steps} steps) tok/s": trainer_rate})
        print(rows[-1], flush=True)
        for n in (int(v) for v in args.n.split(",")):
            cached = generation_rate(model, True, n, args.new_tokens)
            recomputed = generation_rate(model, False, n, args.new_tokens)
            gen_rows.append({"config": name, "context": block, "reach (context_tokens)": model.context_tokens,
                             "sequences": n, "cache tok/s": cached, "recompute tok/s": recomputed,
                             "cache speed-up": f"{cached / recomputed:.1f}x"})
            print(gen_rows[-1], flush=True)
    print(f"\n{args.threads} threads, {args.rounds} alternating blocks of 5 steps, pycode char-level\n")
    print(markdown(rows))
    print(f"\nGeneration: {args.new_tokens} new tokens after <eos>, temperature 1, the `genlab train` run\n")
    print(markdown(gen_rows))


if __name__ == "__main__":
    main()
