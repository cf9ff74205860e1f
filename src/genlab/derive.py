"""Run folders made from another run rather than by training: `genlab merge` (an adapter run as a plain run) and
`genlab compress` (genlab.compress). Each is a new folder with the source's config (changed where the new
weights call for it), its data description and tokenizer, and `derived` in config.json: the source run,
the SHA-256 of its weights and what was done, so provenance and the model card can say where it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genlab import registry
from genlab.adapt import base_dir, relative_to
from genlab.config import run_config_to_json
from genlab.errors import RunError
from genlab.loading import load
from genlab.models.lora import merged_state
from genlab.runs import (CONFIG, TOKENIZER, WEIGHTS, Checkpoint, has_checkpoint, load_weights, read_config,
                         read_manifest, read_run_file, read_verified, save_checkpoint, sha256, write_lock)


def source_record(run_dir: Path, out: Path, operation: dict[str, Any]) -> dict:
    """config.json's `derived`: where the weights came from and what was done to them."""
    return {"run": relative_to(out, run_dir), "sha256": sha256(read_verified(run_dir, WEIGHTS)), **operation}


def write_derived(run_dir: Path, out: Path, cfg, weights: dict[str, torch.Tensor],
                  ema: dict[str, torch.Tensor] | None, operation: dict[str, Any], info: dict[str, Any]) -> Path:
    """A new run folder `out` holding `weights` (and `ema`) for `cfg`, derived from the run `run_dir`. Refuses
    an existing run; written as a checkpoint (journalled, hashed) with no optimizer state: it is a starting
    point (--init-from), not a training to resume."""
    run_dir, out = Path(run_dir), Path(out)
    if out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents:
        raise RunError(f"--out {out} is the source run or inside it; expected a new folder outside {run_dir}")
    source = read_config(run_dir)
    manifest = read_manifest(run_dir)
    if cfg.init.run:  # relative to the source run; the new folder may sit elsewhere
        cfg.init.run = relative_to(out, base_dir(run_dir, cfg))
    with write_lock(out):
        if has_checkpoint(out):
            raise RunError(f"{out} already holds a run; choose another --out")
        doc = {**json.loads(run_config_to_json(cfg)), "dataset": source.get("dataset", {}),
               "derived": source_record(run_dir, out, operation)}
        files = {CONFIG: json.dumps(doc, indent=2).encode()}
        if TOKENIZER in manifest["files"]:
            files[TOKENIZER] = read_run_file(run_dir, TOKENIZER)
        keep = {k: manifest.get(k) for k in ("started", "device", "precision", "world_size", "torch_version")}
        save_checkpoint(out, Checkpoint(manifest["step"], weights, ema, {}, {"derived": operation["operation"]},
                                        {**keep, **info, "wall_time_s": manifest.get("wall_time_s"),
                                         "genlab_version": cfg.version}), files)
    return out


def merge(run_dir: str | Path, out: str | Path) -> Path:
    """An adapter run's adapters merged into its base weights (W + alpha/r * B A): a plain run of the same
    family that computes what the adapter run computes, needing no base folder."""
    run_dir = Path(run_dir)
    raw = load(run_dir, ema=False, device="cpu")
    cfg = raw.run.config
    if cfg.adapter.type == "none":
        raise RunError(f"{run_dir} has no adapter (config.json adapter.type is none); nothing to merge")
    weights = merged_state(raw)
    ema = merged_state(load(run_dir, ema=True, device="cpu")) if load_weights(run_dir)[1] is not None else None
    adapter = {"type": cfg.adapter.type, "rank": cfg.adapter.rank, "alpha": cfg.adapter.alpha}
    cfg.adapter.type, cfg.adapter.freeze = "none", False
    n = sum(p.numel() for p in registry.build(cfg.family, cfg.model).parameters())
    return write_derived(run_dir, Path(out), cfg, weights, ema, {"operation": "merge", "adapter": adapter},
                         {"parameters": n})
