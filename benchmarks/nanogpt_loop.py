"""The baseline for benchmarks/gpt_speed.py: a plain PyTorch training loop that follows nanoGPT's recipe
(Karpathy, github.com/karpathy/nanoGPT: model.py and train.py, as run on a CPU with `--device=cpu --compile=False`),
written out here so that the benchmark needs nothing beyond PyTorch.

The model is nanoGPT's: token + learned position embeddings, pre-norm blocks with one fused q/k/v projection,
`scaled_dot_product_attention(is_causal=True)`, a GELU MLP of width 4d, a final LayerNorm and a head tied to the
token embedding; init N(0, 0.02), the residual projections at 0.02 / sqrt(2 n_layer). The loop is train.py's:
random windows of the token array per step (`get_batch`), AdamW with betas (0.9, 0.99) and weight decay 0.1 on the
2-D weights only, warmup then cosine learning rate, gradient clipping at 1.0, fp32 on the CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.c_attn, self.c_proj, self.n_head = nn.Linear(d, 3 * d), nn.Linear(d, d), n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in self.c_attn(x).split(d, 2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))


class NanoBlock(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(d), CausalSelfAttention(d, n_head), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, d_model: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, d_model), nn.Embedding(block_size, d_model)
        self.h = nn.ModuleList(NanoBlock(d_model, n_head) for _ in range(n_layer))
        self.ln_f, self.lm_head = nn.LayerNorm(d_model), nn.Linear(d_model, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))
            elif p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


class NanoLoop:
    """train.py's loop over a 1-D token array; `steps(k)` runs k optimizer steps and returns the last loss."""

    def __init__(self, data: torch.Tensor, vocab_size: int, block_size: int, n_layer: int, n_head: int,
                 d_model: int, batch_size: int, lr: float = 1e-3, warmup: int = 100, max_iters: int = 2000,
                 seed: int = 1337):
        torch.manual_seed(seed)
        self.data, self.block, self.batch = data.long(), block_size, batch_size
        self.model = NanoGPT(vocab_size, block_size, n_layer, n_head, d_model).train()
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        rest = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                     lr=lr, betas=(0.9, 0.99))
        self.lr, self.warmup, self.max_iters, self.it = lr, warmup, max_iters, 0

    def get_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(self.data) - self.block, (self.batch,))
        x = torch.stack([self.data[i:i + self.block] for i in ix])
        y = torch.stack([self.data[i + 1:i + 1 + self.block] for i in ix])
        return x, y

    def get_lr(self) -> float:
        if self.it < self.warmup:
            return self.lr * (self.it + 1) / (self.warmup + 1)
        ratio = min(1.0, (self.it - self.warmup) / max(1, self.max_iters - self.warmup))
        return self.lr / 10 + 0.5 * (1 + math.cos(math.pi * ratio)) * (self.lr - self.lr / 10)

    def steps(self, k: int) -> float:
        for _ in range(k):
            for g in self.opt.param_groups:
                g["lr"] = self.get_lr()
            x, y = self.get_batch()
            loss = self.model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.it += 1
        return float(loss.detach())
