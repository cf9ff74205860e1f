"""Loading a run: the model rebuilt from config.json and its verified weights, in eval mode.

A run folder is untrusted input: loading reads it (genlab.runs checks every file against checkpoint.json)
and never writes to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genlab import registry
from genlab.adapt import adapt, init_weights
from genlab.config import RunConfig, run_config_from_dict
from genlab.data.tokenizers import Tokenizer, run_tokenizer
from genlab.errors import ConfigError, RunError
from genlab.models import int8
from genlab.models.base import load_saved_state
from genlab.runs import CONFIG, TOKENIZER, WEIGHTS, load_weights, read_config, read_manifest


def load_config(run_dir: str | Path) -> RunConfig:
    return _config_from_doc(read_config(Path(run_dir)), Path(run_dir) / CONFIG)


def _config_from_doc(doc: dict, path: Path) -> RunConfig:
    """A RunConfig from a config.json document already checked by runs.read_config; errors name `path`."""
    try:
        return run_config_from_dict(doc, registry.get(doc["family"]).config_cls)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None


@dataclass(frozen=True)
class RunInfo:
    """What a loaded model knows of the run it came from (`model.run`; None for a model built in code)."""

    path: Path                    # the run folder
    config: RunConfig             # config.json, typed
    classes: tuple[str, ...]      # the data's label names; empty when it has none
    tokenizer: Tokenizer | None   # text runs: tokenizer.json, checked against the model's vocabulary


def load(run_dir: str | Path, *, ema: bool = True, device: str | torch.device | None = None) -> nn.Module:
    """Rebuild a run's model from config.json and its (EMA, when present) weights; eval mode.

    `model.run` is the run it came from (a RunInfo: folder, config, label names, tokenizer).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a folder; expected a genlab run folder (runs/<name>)")
    doc = read_config(run_dir)
    cfg = _config_from_doc(doc, run_dir / CONFIG)
    classes = doc.get("dataset", {}).get("classes") or []
    if not isinstance(classes, list):
        raise RunError(f"{run_dir / CONFIG}: \"dataset.classes\" is {classes!r:.60}; expected a list of label names")
    model = registry.build(cfg.family, cfg.model, f"{run_dir / CONFIG} \"model\"")
    if cfg.adapter.type != "none" and cfg.adapter.freeze:  # the run holds its adapters; the rest is its base's
        init_weights(model, cfg, run_dir, [str(c) for c in classes], require_hash=True)
    adapt(model, cfg)
    weights, ema_weights = load_weights(run_dir)
    state = ema_weights if ema and ema_weights is not None else weights
    try:
        load_saved_state(model, int8.unpack(state) if cfg.compress.quantize == "int8" else state)
    except RuntimeError as e:  # torch lists every mismatch on its own line: name the first and count them
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        problems = [line for line in lines[1:] if line.startswith(("size mismatch", "Missing", "Unexpected"))]
        raise RunError(f"{run_dir / WEIGHTS} does not fit the model that {CONFIG} describes "
                       f"({len(problems)} problem(s); first: {(problems or lines or ['?'])[0][:300]})") from None
    # lexists: a symlinked tokenizer.json is refused, not skipped; a hashed one that is gone is refused too
    has_tokenizer = os.path.lexists(run_dir / TOKENIZER) or TOKENIZER in read_manifest(run_dir)["files"]
    tokenizer = run_tokenizer(run_dir, getattr(cfg.model, "vocab_size", None)) if has_tokenizer else None
    if cfg.compress.quantize == "int8":  # dynamic int8 layers run on the CPU only
        model, device = int8.quantize(model), "cpu"
    model.run = RunInfo(run_dir, cfg, tuple(str(c) for c in classes), tokenizer)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def as_model(run: str | Path | nn.Module) -> nn.Module:
    """A loaded model as is, or a run folder loaded with `load`."""
    return run if isinstance(run, nn.Module) else load(run)
