"""Starting a run from another run's weights (`genlab train --init-from RUN`), with or without LoRA adapters.

The new run keeps the base run's architecture; its data may differ. What the data changes is handled by
name, never silently:
- a new label set: every tensor whose shape follows the number of classes (found by building the model with
  one class more) is mapped row by row by class name; rows of classes the base never saw start fresh, and
  the log lists those tensors;
- a new vocabulary: text runs keep the base run's tokenizer (genlab.kinds.text.prepare); another tokenizer
  is refused;
- any other change of shape (a new image size for a model whose layers depend on it) is refused, naming the
  tensor and the config keys that differ.

With `--adapter lora` the base weights are frozen (adapter.freeze) and only the adapters and the label tensors
train: the run then saves only those (models.base.saved_state), and loading it reads the rest from the base
run, whose model.safetensors must still have the SHA-256 recorded in config.json's init.sha256.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from genlab import registry
from genlab.config import RunConfig
from genlab.errors import ConfigError, RunError
from genlab.models.lora import apply_lora, freeze_base, is_adapter_key
from genlab.runs import WEIGHTS, load_weights, read_config, read_verified, sha256


FRESH = "watch_"  # buffers of a run's own training watch (the GAN's collapse references): never carried over


def base_dir(run_dir: Path, cfg: RunConfig) -> Path:
    """The base run's folder: init.run is stored relative to the run that names it."""
    return Path(os.path.normpath(Path(run_dir) / cfg.init.run))


def relative_to(run_dir: Path, base: Path) -> str:
    """`base` relative to `run_dir`, lexically (as base_dir joins it back: a symbolic link in the way resolves
    the same both times)."""
    return os.path.relpath(os.path.abspath(base), os.path.abspath(run_dir))


def base_config(base: Path, family: str) -> dict:
    """The base run's config.json, checked to be a run of `family`."""
    if not Path(base).is_dir():
        raise RunError(f"--init-from {base}: not a folder; expected a trained genlab run folder")
    doc = read_config(base)
    if doc["family"] != family:
        raise ConfigError(f"--init-from {base}: it is a {doc['family']} run; a {family} run can start only from "
                          f"another {family} run")
    adapter = doc.get("adapter", {})
    if adapter.get("type", "none") != "none" and adapter.get("freeze", True):
        raise ConfigError(f"--init-from {base}: it is an adapter run whose weights are mostly its own base's; "
                          f"merge it first (genlab merge {base} --out MERGED) and start from the merged run")
    if doc.get("compress", {}).get("quantize", "none") != "none":
        raise ConfigError(f"--init-from {base}: its weights are int8, for inference only; start from the float "
                          f"run it was made from ({doc.get('derived', {}).get('run', 'see its config.json')})")
    return doc


def label_tensors(cfg: RunConfig) -> dict[str, int]:
    """The tensors whose shape follows the number of classes, with the dimension that does: the model built
    with one class more differs in exactly those. Empty for a model without labels."""
    n = getattr(cfg.model, "num_classes", 0)
    if not n:
        return {}
    more = copy.deepcopy(cfg.model)
    more.num_classes = n + 1
    with torch.random.fork_rng(devices=[]):  # the probe's random draws leave the run's seed alone
        a = registry.build(cfg.family, cfg.model).state_dict()
        b = registry.build(cfg.family, more).state_dict()
    out = {}
    for key, t in a.items():
        dims = [d for d in range(t.dim()) if t.shape[d] != b[key].shape[d]]
        if dims:
            out[key] = dims[0]
    return out


def _map_rows(new: torch.Tensor, old: torch.Tensor, dim: int, new_classes: list[str],
              old_classes: list[str]) -> tuple[torch.Tensor, int]:
    """`new` with the rows (along `dim`) of classes that `old` also has copied from it, and rows past the
    classes (a null label for guidance) copied from the same place past old's classes. Returns the tensor and
    how many rows started fresh."""
    out, fresh = new.clone(), 0
    extra_old = old.shape[dim] - len(old_classes)
    for i in range(new.shape[dim]):
        if i < len(new_classes):
            j = old_classes.index(new_classes[i]) if new_classes[i] in old_classes else None
        else:
            j = len(old_classes) + i - len(new_classes) if i - len(new_classes) < extra_old else None
        if j is None:
            fresh += 1
        else:
            out.select(dim, i).copy_(old.select(dim, j))
    return out, fresh


def _changed_keys(cfg: RunConfig, base_model: dict) -> str:
    now = asdict(cfg.model)
    keys = [f"model.{k} {base_model.get(k)} -> {v}" for k, v in now.items() if base_model.get(k) != v]
    return "; ".join(keys) or "no model key"


def init_weights(model: nn.Module, cfg: RunConfig, run_dir: Path, classes: list[str], *,
                 require_hash: bool = False) -> list[str]:
    """Load the base run's weights (its EMA weights when init.weights is ema and it has them) into `model`,
    mapping label tensors by class name. Checks (or, the first time, records) init.sha256. Returns one line per
    tensor that did not come over whole (empty when every tensor did)."""
    base = base_dir(run_dir, cfg)
    doc = base_config(base, cfg.family)
    digest = sha256(read_verified(base, WEIGHTS))
    if require_hash and not cfg.init.sha256:
        raise RunError(f"{run_dir}/config.json names the base {base} but not the SHA-256 of its weights "
                       "(init.sha256); refusing to combine weights nobody vouched for")
    if cfg.init.sha256 and digest != cfg.init.sha256:
        raise RunError(f"{base / WEIGHTS} has SHA-256 {digest}, but {run_dir} was made from weights with "
                       f"{cfg.init.sha256} (config.json init.sha256): the base run changed since; refusing to "
                       "combine this run with other weights")
    cfg.init.sha256 = digest
    weights, ema = load_weights(base)
    source = ema if cfg.init.weights == "ema" and ema is not None else weights
    report = [] if source is ema or cfg.init.weights == "raw" else ["the base has no EMA weights: its raw ones came"]
    old_classes = [str(c) for c in doc.get("dataset", {}).get("classes") or []]
    labels = label_tensors(cfg)
    state = model.state_dict()
    for key, t in state.items():
        if is_adapter_key(key) or key.rpartition(".")[2].startswith(FRESH):
            continue
        if key not in source:
            if require_hash:  # loading an adapter run: its base must hold every weight it does not
                raise RunError(f"{base / WEIGHTS} lacks {key}; it is not the base run {run_dir} was trained on")
            report.append(f"re-initialised {key} {tuple(t.shape)}: not in the base run")
            continue
        old = source[key]
        if key in labels and (old.shape != t.shape or old_classes != classes):
            state[key], fresh = _map_rows(t, old.to(t.dtype), labels[key], classes, old_classes)
            report.append(f"re-initialised {key} {tuple(old.shape)} -> {tuple(t.shape)}: {fresh} label row(s) "
                          "start fresh, the others come from the base by class name")
        elif old.shape != t.shape:
            raise ConfigError(f"--init-from {base}: {key} has shape {tuple(old.shape)} there and {tuple(t.shape)} "
                              f"for this data ({_changed_keys(cfg, doc['model'])}); this architecture cannot "
                              "take the change: use data like the base run's (e.g. the same --image-size)")
        else:
            state[key] = old.to(t.dtype)
    model.load_state_dict(state)
    if doc.get("compress", {}).get("prune", 0) > 0:
        report.append(keep_pruned(model))
    return report


def keep_pruned(model: nn.Module) -> str:
    """Fine-tuning a pruned run keeps its pruned weights at zero: their gradients are masked (so AdamW's
    update of a zero weight is zero too). Returns a line for the log."""
    zeros = 0
    for p in model.parameters():
        mask = p.detach() != 0
        if p.dim() > 1 and not mask.all():
            zeros += int((~mask).sum())
            p.register_hook(lambda g, m=mask: g * m)
    return f"{zeros:,} pruned weights stay zero (their gradients are masked)"


def adapt(model: nn.Module, cfg: RunConfig) -> list[str]:
    """Add the adapters cfg.adapter asks for (none: nothing) and freeze the base when it says so. The label
    tensors train whole. Returns the adapted layers' names."""
    if cfg.adapter.type == "none":
        return []
    targets = registry.get(cfg.family).model_cls.ADAPTER_TARGETS
    if not targets:
        able = [f.name for f in registry.FAMILIES.values() if f.model_cls.ADAPTER_TARGETS]
        raise ConfigError(f"--adapter {cfg.adapter.type}: {cfg.family} has no adapter layers declared; "
                          f"families with LoRA: {', '.join(able)}")
    labels = label_tensors(cfg)
    whole = tuple(k.rpartition(".")[0] for k in labels)
    names = apply_lora(model, cfg.adapter.rank, cfg.adapter.alpha, targets=targets, skip=whole)
    if cfg.adapter.freeze:
        freeze_base(model, keep=tuple(labels))
        model.base_frozen = True
    return names
