"""`genlab compress RUN`: magnitude pruning and dynamic int8, written as a new run folder (genlab.derive).

- `prune=r` (unstructured): in every Linear, convolution and LSTM weight, the share r with the smallest
  magnitude is set to zero (torch.nn.utils.prune.l1_unstructured, per layer, so no layer is emptied). It
  makes the file smaller once compressed and keeps the same shapes; on a CPU it does not make dense kernels
  faster. Fine-tuning the pruned run (`genlab train FAMILY --init-from PRUNED`) keeps those weights at zero.
- `structured=True` with `prune=r`: the Transformer families' MLPs lose the share r of their hidden units
  with the smallest weight norms (genlab.models.layers.Block's `d_ff`); the model is narrower and runs faster.
- `quantize="int8"`: Linear and LSTM weights stored as int8 and run as dynamic int8 layers (genlab.models.int8).

Biases, normalisation and embeddings are never pruned; a tied weight (GPT's head is its embedding) neither.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from genlab import registry
from genlab.derive import write_derived
from genlab.errors import ConfigError
from genlab.loading import load
from genlab.models import int8
from genlab.models.layers import Block
from genlab.models.lora import shared_parameters
from genlab.runs import WEIGHTS, load_weights, read_manifest

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) of every weight unstructured pruning touches; a parametrized weight (the GAN's
    spectral norm) is pruned in its stored original, whose zeros stay zeros after the normalisation."""
    shared, out = shared_parameters(model), []
    for m in model.modules():
        if isinstance(m, PRUNABLE) and parametrize.is_parametrized(m, "weight"):
            out.append((m.parametrizations.weight, "original"))
        elif isinstance(m, PRUNABLE) and id(m.weight) not in shared:
            out.append((m, "weight"))
        elif isinstance(m, nn.LSTM):
            out += [(m, n) for n, _ in m.named_parameters() if n.startswith("weight_")]
    return out


@torch.no_grad()
def prune_unstructured(model: nn.Module, amount: float) -> int:
    """Zero the share `amount` of smallest-magnitude weights in each prunable tensor, in place; returns how many
    weights are zero in those tensors afterwards."""
    if not 0 <= amount < 1:
        raise ConfigError(f"--prune {amount}; expected a share in [0, 1), e.g. 0.5")
    zeros = 0
    for module, name in prunable(model):
        if amount > 0:  # the scores in the standard layout: torch's pruning flattens them with view(), which a
            # channels-last weight (the U-Net's) cannot take
            scores = getattr(module, name).detach().abs().contiguous()
            torch_prune.l1_unstructured(module, name, amount=amount, importance_scores=scores)
            torch_prune.remove(module, name)
        zeros += int((getattr(module, name) == 0).sum())
    return zeros


@torch.no_grad()
def prune_mlp_units(model: nn.Module, cfg, amount: float):
    """(A narrower model, its config): every Transformer block's MLP keeps the (1 - amount) share of its hidden
    units with the largest ||W_in[j]|| * ||W_out[:, j]|| (the same count in every block, so one `d_ff`)."""
    if not 0 < amount < 1:
        raise ConfigError(f"--structured --prune {amount}; expected a share in (0, 1) of hidden units to remove")
    names = {id(m): n for n, m in model.named_modules()}
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    if not blocks:
        raise ConfigError(f"--structured removes hidden units of Transformer MLPs, and {cfg.family} has none; "
                          "use --prune alone (unstructured)")
    keep = max(1, round(blocks[0].mlp[0].out_features * (1 - amount)))
    state = model.state_dict()
    for block in blocks:
        fc, proj, at = block.mlp[0], block.mlp[2], names[id(block)] + ".mlp"
        idx = (fc.weight.norm(dim=1) * proj.weight.norm(dim=0)).topk(keep).indices.sort().values
        state[f"{at}.0.weight"], state[f"{at}.0.bias"] = fc.weight[idx], fc.bias[idx]
        state[f"{at}.2.weight"] = proj.weight[:, idx]
    cfg = copy.deepcopy(cfg)
    cfg.model.d_ff = keep
    narrow = registry.build(cfg.family, cfg.model)
    narrow.load_state_dict(state)
    return narrow.eval(), cfg


def _ensure_whole(cfg) -> None:
    if cfg.adapter.type != "none":
        raise ConfigError("this is an adapter run; merge it first (genlab merge RUN --out MERGED), then compress "
                          "the merged run")
    if cfg.compress.quantize != "none":
        raise ConfigError("this run's weights are int8 already; compress the float run it was made from")


def compress(run_dir: str | Path, out: str | Path, *, prune: float = 0.0, structured: bool = False,
             quantize: str = "none") -> Path:
    """A compressed copy of a run in `out` (its config records what was done; see the module docstring)."""
    if quantize not in ("none", "int8"):
        raise ConfigError(f"--quantize {quantize}; expected int8 (or none)")
    if prune == 0 and quantize == "none":
        raise ConfigError("nothing to do: give --prune SHARE and/or --quantize int8")
    run_dir = Path(run_dir)
    has_ema = load_weights(run_dir)[1] is not None
    models = {"raw": load(run_dir, ema=False, device="cpu")} | (
        {"ema": load(run_dir, ema=True, device="cpu")} if has_ema else {})
    cfg = models["raw"].run.config
    _ensure_whole(cfg)
    states, zeros = {}, {}
    for which, model in models.items():  # the raw and the EMA weights, each pruned by its own magnitudes
        if structured:
            model, cfg = prune_mlp_units(model, cfg, prune)
        else:
            zeros[which] = prune_unstructured(model, prune)
        models[which] = model
        state = model.state_dict()
        states[which] = int8.pack(state, int8.int8_keys(model)) if quantize == "int8" else state
    n = sum(p.numel() for p in models["raw"].parameters())
    nonzero = sum(int((p != 0).sum()) for p in models["raw"].parameters())
    cfg.compress.prune = max(cfg.compress.prune, prune)
    cfg.compress.structured = cfg.compress.structured or structured
    cfg.compress.quantize = quantize
    operation = {"operation": "compress", "prune": prune, "structured": structured, "quantize": quantize}
    return write_derived(run_dir, Path(out), cfg, states["raw"], states.get("ema"), operation,
                         {"parameters": n, "nonzero_parameters": nonzero, "pruned_zeros": zeros.get("raw", 0)})


def describe_compressed(run_dir: Path, out: Path) -> str:
    """One line: what the new run holds against its source (file size, parameters, non-zero weights)."""
    before, after = read_manifest(run_dir), read_manifest(out)
    size = [(Path(d) / WEIGHTS).stat().st_size for d in (run_dir, out)]
    nonzero = after.get("nonzero_parameters")
    return (f"wrote {out}: {WEIGHTS} {size[0] / 1e6:.2f} MB -> {size[1] / 1e6:.2f} MB, parameters "
            f"{before.get('parameters', 0):,} -> {after.get('parameters', 0):,}"
            + (f" ({nonzero:,} non-zero)" if isinstance(nonzero, int) else ""))
