"""Optimisers, the learning-rate schedule and the exponential moving average of weights."""

from __future__ import annotations

import math

import torch
from torch import nn

from genlab.errors import UsageError
from genlab.models.base import saved_state


def build_optimizers(groups: dict[str, dict]) -> dict[str, torch.optim.AdamW]:
    """One AdamW per named group (the GAN has "g" and "d"; every other family has "main"). The fused kernel
    (one pass over each parameter per step) where PyTorch has one for the device and dtype: on this two-core CPU
    it makes a small GPT's whole training step about 1.1x faster than the multi-tensor one, and AdamW's own step
    for the 8x8 `tiny` U-Net, whose channels-last weights the multi-tensor kernel walks one at a time, about 5x
    (benchmarks/RESULTS.md). The fused kernel pairs a parameter with its moment buffers in memory order, so a
    resumed optimizer must get its buffers in the parameters' layout: `load_optimizer_state`."""
    opts = {}
    for name, g in groups.items():
        if not g["params"]:
            raise UsageError(f"optimizer group {name!r} has no trainable parameters")
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                    for p in g["params"])
        opts[name] = torch.optim.AdamW(g["params"], lr=g["lr"], betas=tuple(g["betas"]), weight_decay=g["weight_decay"],
                                       fused=fused or None)
        for pg in opts[name].param_groups:
            pg["base_lr"] = g["lr"]
    return opts


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """`opt.load_state_dict(state)`, then each buffer of a parameter's shape laid out in memory as the parameter is.
    A run folder stores tensors in the standard layout; a channels-last weight's (the U-Net's) moments would
    otherwise reach the fused kernel, which walks memory order, with their elements paired to the wrong weights
    (tests/test_optim.py)."""
    opt.load_state_dict(state)
    for p, buffers in opt.state.items():
        for k, v in buffers.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                buffers[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def lr_factor(step: int, warmup: int, horizon: int | None, min_ratio: float, fraction: float = 0.0) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to `min_ratio` at step `horizon`, or at the end of a
    wall-clock budget: `fraction` is the share of the budget's time after warmup used so far (0 without one).
    The schedule follows whichever is further along, so a budget run decays with the clock, not with a step
    count guessed from its first steps.
    """
    if step < warmup:
        return (step + 1) / warmup
    by_steps = (step - warmup) / (horizon - warmup) if horizon is not None and horizon > warmup else 0.0
    progress = min(1.0, max(by_steps, fraction))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(opt: torch.optim.Optimizer, factor: float) -> float:
    for pg in opt.param_groups:
        pg["lr"] = pg["base_lr"] * factor
    return opt.param_groups[0]["lr"]


class EMA:
    """Exponential moving average of a model's floating-point state (Polyak averaging).

    The decay warms up as min(decay, (1 + n) / (10 + n)) so early averages are not dominated by
    the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in saved_state(model).items()}  # frozen base weights: not

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        floats_ema, floats_now = [], []
        for k, v in saved_state(model).items():
            if v.is_floating_point():
                floats_ema.append(self.state[k])
                floats_now.append(v.detach())
            else:
                self.state[k].copy_(v)
        torch._foreach_lerp_(floats_ema, floats_now, 1 - d)
