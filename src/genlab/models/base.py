"""The family contract (docs/design.md): what every model family provides to the trainer and the CLI.

A family is an `nn.Module` built from its config alone (a `Model`), with
  - `loss(batch) -> dict` holding a scalar "loss" (and any other scalars worth logging), and, for a
    generator (a `GenerativeModel`), `sample(n, *, cond=None, generator=None, **controls)`.
`forward` routes to `loss`, so that DistributedDataParallel's gradient hooks see every step.

A family with several optimizers (the GAN) overrides `param_groups` and `train_step`; the trainer
never needs to know which family it is running.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Protocol

import torch
from torch import nn

from genlab.errors import UsageError
from genlab.models.controls import Control, by_name


class Stepper(Protocol):
    """What the trainer hands to `train_step` (see genlab.training.trainer.Stepper)."""

    def forward(self, batch: dict, **kwargs: Any) -> dict: ...

    def step(self, group: str, out: dict) -> None: ...


class Model(nn.Module):
    """Base class of every family: built from its config, trained through `loss` (and `train_step`).
    Subclasses set `family` and implement `loss`; generators derive from GenerativeModel instead."""

    family: str = ""
    generative: bool = False  # GenerativeModel: True (it has `sample`)
    CONTROLS: tuple[Control, ...] = ()  # its sampling controls, declared once (genlab.models.controls)
    # what it can do beyond its kind's basics, declared (the server's routes and the CLI's commands ask this):
    # "latent": draw(n, cond=, generator=) -> (z, y) and decode(z, y): latent walks; "reconstruct": held-out
    # images through encode and decode; "stream": stream_rows, generation token by token for many rows at once
    CAPABILITIES: frozenset[str] = frozenset()
    ADAPTER_TARGETS: tuple[type, ...] = ()  # the layer types LoRA adapts (genlab.models.lora); () = none
    run: Any = None  # the genlab.loading.RunInfo of the run it was loaded from; None when built in code

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @property
    def label_required(self) -> bool:
        """True when this model cannot sample without a class label (a conditional autoencoder)."""
        return False

    def controls(self) -> dict[str, Control]:
        """This model's sampling controls by name, with the bounds that depend on its config filled in."""
        return by_name(self.CONTROLS)

    def plan(self, *, labelled: bool = False, **controls: Any) -> dict[str, Any]:
        """The controls a sampling call will use, resolved (defaults filled in, checked): equal plans can share
        a batch. Families whose controls interact (the DDPM's sampler and steps) override it."""
        return controls

    def watch(self, generator: torch.Generator | None = None) -> tuple[dict[str, float], str | None]:
        """What the trainer logs at each validation beside the losses (scalars), and a warning or None; the GAN
        watches its diversity for mode collapse. Nothing by default."""
        return {}, None

    def forward(self, batch: dict, **kwargs: Any) -> dict:
        return self.loss(batch, **kwargs)

    def loss(self, batch: dict, **kwargs: Any) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must implement loss(batch)")

    def param_groups(self, train: Any) -> dict[str, dict]:
        """Optimizer groups by name: {"main": {"params": [...], "lr": ..., "betas": ..., "weight_decay": ...}}."""
        return {"main": {"params": [p for p in self.parameters() if p.requires_grad], "lr": train.lr,
                         "betas": (train.beta1, train.beta2), "weight_decay": train.weight_decay}}

    def train_step(self, batch: dict, stepper: Stepper) -> dict:
        """One optimisation step on `batch`: forward through the (possibly DDP-wrapped) model, then step."""
        out = stepper.forward(batch)
        stepper.step("main", out)
        return out


def saved_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint (and the EMA) holds of a model: its whole state, or, for a model adapted with its base
    weights frozen (`base_frozen`, set by genlab.adapt), only what training changes, the trainable parameters
    and the buffers: the rest is the base run's."""
    state = model.state_dict()
    if not getattr(model, "base_frozen", False):
        return state
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    return {k: v for k, v in state.items() if k in trainable or k not in params}


def load_saved_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what `saved_state` gave; a state missing any of those tensors, or holding others, is an error."""
    if not getattr(model, "base_frozen", False):
        model.load_state_dict(state)
        return
    expected = set(saved_state(model))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise RuntimeError(f"the saved state does not fit the adapted model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    model.load_state_dict(state, strict=False)


class GenerativeModel(Model):
    """Base class of the generators: a Model with `sample`."""

    generative = True

    @torch.no_grad()
    def sample(self, n: int, *, cond: Any = None, generator: torch.Generator | None = None, **controls: Any):
        raise NotImplementedError(f"{type(self).__name__} must implement sample(n, cond=, generator=)")


def as_labels(cond: Any, n: int, num_classes: int, device: torch.device) -> torch.Tensor | None:
    """Turn `cond` (None, an int, a sequence or a tensor of class ids) into n labels, checked against num_classes."""
    if cond is None:
        return None
    if num_classes <= 0:
        raise UsageError("this model was trained without labels; drop the label (cond=None) or train with --conditional")
    labels = torch.as_tensor(cond, dtype=torch.long, device=device).flatten()
    if labels.numel() == 1:
        labels = labels.expand(n)
    if labels.numel() != n:
        raise UsageError(f"got {labels.numel()} labels for {n} samples; give one label or one per sample")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UsageError(f"label {labels.max().item() if labels.max() >= num_classes else labels.min().item()} "
                         f"is out of range; this model knows labels 0..{num_classes - 1}")
    return labels.clone()


class NoiseParts:
    """Gaussian noise for a batch stacked from several independent requests: rows are drawn part by
    part, each part of `rows` rows from its own generator, so every part gets exactly the noise its
    generator would give a batch of `rows` alone. A sampler that accepts a NoiseParts as its generator
    (DDPM) can serve many requests in one forward pass (genlab.serve's dynamic batching)."""

    def __init__(self, parts: list[tuple[int, torch.Generator | None]]):
        self.parts = parts

    def randn(self, shape: tuple, device: torch.device) -> torch.Tensor:
        if shape[0] != sum(rows for rows, _ in self.parts):
            raise UsageError(f"noise for {shape[0]} rows requested; the parts hold "
                             f"{sum(rows for rows, _ in self.parts)}")
        return torch.cat([randn((rows, *shape[1:]), gen, device) for rows, gen in self.parts])


def randn(shape: tuple, generator: torch.Generator | NoiseParts | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (CPU by default), then moved: a seed gives
    the same samples on every machine. A NoiseParts draws each of its parts from its own generator."""
    if isinstance(generator, NoiseParts):
        return generator.randn(shape, device)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put `module` in eval mode (dropout off, BatchNorm running statistics) and restore its mode after."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985): keeps Gaussian latents at a typical norm along the path."""
    omega = torch.acos((a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)))
    so = torch.sin(omega).clamp_min(1e-8)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b
