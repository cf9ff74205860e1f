"""LoRA: low-rank adaptation (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

A frozen weight W gets a trainable low-rank update: y = W x + (alpha / r) * B A x, with A (r x in) drawn like a
layer's weight and B (out x r) zero, so an adapter at step 0 leaves the model exactly as it was. Convolutions
get the same update as diffusers' training scripts give them: A is a convolution with the layer's kernel,
stride and padding into r channels and B a 1x1 convolution out of them, whose composition is one kernel of the
layer's shape (`delta`), so merging is W += (alpha / r) * delta.

The adapted layers subclass nn.Linear and nn.Conv2d and keep the very Parameter objects of the layers they
replace: state-dict keys of the base weights stay the same (a base run's weights load as they are), tied
weights stay tied, and only `<layer>.lora_A` and `<layer>.lora_B` are new.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError

LORA_KEYS = ("lora_A", "lora_B")


class LoRALinear(nn.Linear):
    """nn.Linear plus (alpha / r) * B A."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear draws its weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def delta(self) -> torch.Tensor:
        return self.lora_B @ self.lora_A


class LoRAConv2d(nn.Conv2d):
    """nn.Conv2d plus (alpha / r) * B(A(x)): A a convolution like the layer's into r channels, B a 1x1 one."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float):
        nn.Module.__init__(self)
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "transposed",
                     "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, name, getattr(base, name))
        self.weight, self.bias = base.weight, base.bias
        self.scale = alpha / rank
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_channels, *self.kernel_size, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_channels, rank, 1, 1, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self._conv_forward(x, self.lora_A, None)  # (B, r, H', W'): the layer's kernel, stride and padding
        return self._conv_forward(x, self.weight, self.bias) + F.conv2d(low, self.lora_B) * self.scale

    def delta(self) -> torch.Tensor:
        r = self.lora_A.shape[0]
        return (self.lora_B.view(self.out_channels, r) @ self.lora_A.view(r, -1)).view_as(self.weight)


def _adaptable(module: nn.Module, targets: tuple[type, ...]) -> bool:
    if isinstance(module, (LoRALinear, LoRAConv2d)) or not isinstance(module, targets):
        return False
    return not isinstance(module, nn.Conv2d) or (module.groups == 1 and module.padding_mode == "zeros")


def apply_lora(model: nn.Module, rank: int, alpha: float = 0.0, *, targets: tuple[type, ...] = (nn.Linear,),
               skip: tuple[str, ...] = ()) -> list[str]:
    """Replace every layer of a type in `targets` (nn.Linear, nn.Conv2d) by its LoRA version, in place, except the
    modules named in `skip` (e.g. re-initialised heads, which train whole); alpha 0 means alpha = rank (scale 1).
    Returns the names of the adapted layers."""
    if rank < 1:
        raise ConfigError(f"adapter.rank={rank}; expected a positive rank (4 or 8 are usual)")
    if alpha < 0:
        raise ConfigError(f"adapter.alpha={alpha}; expected >= 0 (0 = the rank, a scale of 1)")
    alpha = alpha or float(rank)
    wrap = {nn.Linear: LoRALinear, nn.Conv2d: LoRAConv2d}
    shared = shared_parameters(model)  # a tied weight (GPT's head is its embedding) stays as it is: merging
    names = [name for name, m in model.named_modules()  # one copy of it would untie the two
             if name and name not in skip and _adaptable(m, targets) and id(m.weight) not in shared]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        cls = wrap[nn.Conv2d if isinstance(base, nn.Conv2d) else nn.Linear]
        setattr(parent, child, cls(base, rank, alpha))
    if not names:
        raise ConfigError(f"{type(model).__name__} has no {' or '.join(t.__name__ for t in targets)} layers to adapt")
    return names


def shared_parameters(model: nn.Module) -> set[int]:
    """The ids of parameters that appear under more than one name (tied weights)."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, n in seen.items() if n > 1}


def is_adapter_key(key: str) -> bool:
    return key.rpartition(".")[2] in LORA_KEYS


def freeze_base(model: nn.Module, keep: tuple[str, ...] = ()) -> None:
    """Train only the adapters (and the parameters whose names start with one of `keep`: re-initialised heads)."""
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter_key(name) or name.startswith(keep))


@torch.no_grad()
def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain model that computes what `model` (with adapters) computes: every adapted
    weight becomes W + (alpha / r) * delta, and the adapter tensors are dropped."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not is_adapter_key(k)}
    for name, m in model.named_modules():
        if isinstance(m, (LoRALinear, LoRAConv2d)):
            key = f"{name}.weight"
            state[key] = state[key] + (m.delta() * m.scale).to(state[key].dtype)
    return state
