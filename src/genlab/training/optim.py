"""Optimisers, the learning-rate schedule and the exponential moving average of weights."""

from __future__ import annotations

import math

import torch
from torch import nn

from genlab.errors import UsageError
from genlab.models.base import saved_state


def build_optimizers(groups: dict[str, dict]) -> dict[str, torch.optim.AdamW]:
    """One AdamW per named group (the GAN has "g" and "d"; every other family has "main")."""
    opts = {}
    for name, g in groups.items():
        if not g["params"]:
            raise UsageError(f"optimizer group {name!r} has no trainable parameters")
        opts[name] = torch.optim.AdamW(g["params"], lr=g["lr"], betas=tuple(g["betas"]), weight_decay=g["weight_decay"])
        for pg in opts[name].param_groups:
            pg["base_lr"] = g["lr"]
    return opts


def lr_factor(step: int, warmup: int, horizon: int | None, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to `min_ratio` at step `horizon`.

    `horizon` is None while a wall-clock budget is still being converted into a step count;
    the factor is then held at 1.
    """
    if step < warmup:
        return (step + 1) / warmup
    if horizon is None or horizon <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (horizon - warmup))
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
