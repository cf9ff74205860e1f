"""Where a GPT training step's time goes on this CPU (issue 14, goal 4): how far genlab's step and the plain nanoGPT
loop are from the machine's peak, and what genlab's step spends its time on.

1. The peak: the best rate of a large fp32 matrix product (2048 x 2048 x 2048) at --threads.
2. Both steps at the configuration (nanoGPT's CPU recipe by default, on random tokens of --vocab): their floating-point
   operations (PyTorch's FlopCounterMode: matrix products and attention), their time per step (alternating blocks
   of 5 steps, medians) and the rate this gives, as a share of the peak.
3. genlab's step under torch.profiler: the operators' own time, grouped by kind, as shares.

    python benchmarks/gpt_step_profile.py [--config recipe|small] [--vocab 2048] [--threads 2] [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from common import alternate, markdown
from gpt_speed import CONFIGS, genlab_steps

from genlab.config import TrainConfig
from genlab.models.gpt import GPTConfig
from nanogpt_loop import NanoLoop

# torch.profiler's operator names -> the kind of work they do (the first prefix that matches)
KINDS = [("matrix products", ("aten::mm", "aten::addmm", "aten::bmm")),
         ("attention (SDPA)", ("aten::_scaled_dot_product",)),
         ("softmax and cross-entropy", ("aten::_log_softmax", "aten::nll_loss")),
         ("GELU", ("aten::gelu",)),
         ("LayerNorm", ("aten::native_layer_norm",)),
         ("AdamW and clipping", ("aten::_fused_adamw", "aten::linalg_vector_norm", "aten::_foreach")),
         ("rotary positions and other products", ("aten::view_as_complex", "aten::view_as_real", "aten::mul"))]
OTHER = "everything else (copies, fills, sums, views, additions)"


def peak_gflops(reps: int = 10) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * 2048 ** 3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="recipe", choices=list(CONFIGS))
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]
    n_layer, n_head, d, block, batch, lr = cfg
    stream = torch.randint(5, args.vocab, (200_000,), generator=torch.Generator().manual_seed(0))
    model_cfg = GPTConfig(vocab_size=args.vocab, n_layer=n_layer, n_head=n_head, d_model=d, block_size=block,
                          dropout=0.0)
    train_cfg = TrainConfig(lr=lr, beta2=0.99, weight_decay=0.1, batch_size=batch)
    impl = {"genlab": genlab_steps(model_cfg, train_cfg, stream),
            "nanoGPT loop": NanoLoop(stream, args.vocab, block, n_layer, n_head, d, batch, lr=lr).steps}
    peak = peak_gflops()
    flops = {}
    for name, steps in impl.items():
        steps(5)  # warm-up
        with FlopCounterMode(display=False) as fc:
            steps(1)
        flops[name] = fc.get_total_flops()
    spent = alternate(impl, args.rounds)
    rows = []
    for name in impl:
        sec = statistics.median(spent[name]) / 5
        rows.append({"step": name, "GFLOP per step": flops[name] / 1e9, "ms per step": sec * 1e3,
                     "tok/s": batch * block / sec, "GFLOP/s": flops[name] / sec / 1e9,
                     "share of the peak": f"{flops[name] / sec / 1e9 / peak:.0%}"})
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        impl["genlab"](10)
    own = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(own.values())
    kinds = defaultdict(float)
    for op, us in own.items():
        kind = next((k for k, prefixes in KINDS if op.startswith(prefixes)), OTHER)
        kinds[kind] += us
    shares = [{"kind of operation (genlab's step)": k, "share of its own time": f"{us / total:.0%}"}
              for k, us in sorted(kinds.items(), key=lambda kv: -kv[1])]
    print(f"\n{args.config}: {n_layer} layers x {n_head} heads x {d}, context {block}, batch {batch}, vocabulary "
          f"{args.vocab}; {args.threads} threads; peak fp32 matrix product {peak:.0f} GFLOP/s\n")
    print(markdown(rows))
    print()
    print(markdown(shares))


if __name__ == "__main__":
    main()
