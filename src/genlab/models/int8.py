"""Dynamic int8 (torch.ao.quantization): Linear and LSTM weights stored as int8, activations quantized on the fly.

On disk (safetensors) each quantized weight is an int8 tensor under its own key plus `<key>.int8_scale`, one
float32 scale per output row (symmetric, zero point 0): q = round(W / s), s = max|W_row| / 127. Loading turns
them back into float weights and `quantize_dynamic` makes the int8 layers from those, so what runs is int8
matrix products on the CPU (fbgemm/qnnpack). Convolutions are not covered by PyTorch's dynamic mode; their
int8 path is the ONNX export's (`genlab export --quantize int8`, onnxruntime's dynamic quantisation).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

from genlab.models.lora import shared_parameters

SCALE = ".int8_scale"


def int8_keys(model: nn.Module) -> list[str]:
    """The weights stored as int8: those of Linear layers (but a weight tied to another, e.g. GPT's head, which
    stays float on disk) and of LSTMs."""
    shared, keys = shared_parameters(model), []
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, nn.Linear) and id(m.weight) not in shared:
            keys.append(prefix + "weight")
        elif isinstance(m, nn.LSTM):
            keys += [prefix + n for n, _ in m.named_parameters() if n.startswith("weight_")]
    return keys


def pack(state: dict[str, torch.Tensor], keys: list[str]) -> dict[str, torch.Tensor]:
    """`state` with the tensors under `keys` as int8 plus their per-row scales."""
    out = dict(state)
    for key in keys:
        w = state[key].float()
        scale = (w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) / 127).clamp_min(1e-12)
        out[key] = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
        out[key + SCALE] = scale.flatten()
    return out


def unpack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float weights from `pack`'s int8 ones (other tensors unchanged)."""
    out = {k: v for k, v in state.items() if not k.endswith(SCALE)}
    for key in [k for k in state if k.endswith(SCALE)]:
        w = key[: -len(SCALE)]
        q = state[w]
        out[w] = q.float() * state[key].view(-1, *([1] * (q.dim() - 1)))
    return out


def quantize(model: nn.Module) -> nn.Module:
    """The model with its Linear (per-channel) and LSTM (per-tensor) layers as dynamic int8 layers, in eval mode."""
    model.eval()
    with warnings.catch_warnings():  # torch 2.13 marks torch.ao.quantization deprecated (its future: torchao,
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")  # docs/adaptation.md)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig, nn.LSTM: default_dynamic_qconfig},
                                inplace=True)
