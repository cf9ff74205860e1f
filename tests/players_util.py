"""Test helpers for the two-player families (gan, wavegan): the trainer's stepper over plain Adam, recording what
each step saw."""

from __future__ import annotations

import torch


class TrainStub:
    """The one TrainConfig field `param_groups` reads."""
    weight_decay = 0.0


class RecordingStepper:
    """What the trainer's stepper does (forward; backward, step, zero grads) over plain Adam, counting each group's
    steps and recording, at each step, which parameters of D and G had gradients right after the backward."""

    def __init__(self, model):
        self.model = model
        self.opts = {name: torch.optim.Adam(g["params"], lr=g["lr"], betas=g["betas"])
                     for name, g in model.param_groups(TrainStub()).items()}
        self.seen: dict[str, dict[str, list]] = {}
        self.steps = {"d": 0, "g": 0}

    def forward(self, batch: dict, **kw) -> dict:
        return self.model(batch, **kw)

    def step(self, group: str, out: dict) -> None:
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        self.seen[group] = {name: [None if p.grad is None else p.grad.clone() for p in net.parameters()]
                            for name, net in (("d", self.model.discriminator), ("g", self.model.generator))}
        self.steps[group] += 1
        self.opts[group].step()
        self.opts[group].zero_grad(set_to_none=True)
