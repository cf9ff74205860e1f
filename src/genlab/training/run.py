"""Training a run: its config (family defaults, preset, overrides), the locked run folder, the data
prepared for the family, and the trainer. The data comes from the `prepare` the caller passes: `genlab.train`
(api.py) passes genlab.kinds.prepare, which asks the family's kind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from genlab import registry
from genlab.adapt import adapt, base_config, init_weights, relative_to
from genlab.config import (DataConfig, RunConfig, TrainConfig, apply_overrides, apply_preset, from_dict,
                           run_config_to_json, set_key, validate_adaptation)
from genlab.errors import ConfigError, RunError, UnsupportedError
from genlab.loading import load_config
from genlab.prepare import Prepared
from genlab.runs import (CHECKPOINT, CONFIG, LOCK, TOKENIZER, atomic_write, has_checkpoint, read_config, recover,
                         write_lock)
from genlab.training.trainer import fit
from genlab.version import __version__


@dataclass
class Run:
    """A trained run: its folder, resolved config and the training result."""

    path: Path
    config: RunConfig
    result: Any = None


# the flags the CLI offers directly (build_config's shortcuts): key -> its config section
SHORTCUTS = {"steps": "train", "minutes": "train", "precision": "train", "seed": "train",
             "conditional": "data", "image_size": "data", "tokenizer": "data", "vocab_size": "data"}
RESUME_MAY_CHANGE = ("steps", "minutes", "precision")  # a resume takes the others only with the run's own value
# the data keys a run started from another takes from it unless told otherwise: what the weights were made for
INHERITED = ("image_size", "conditional", "tokenizer", "vocab_size", "sample_rate", "clip_seconds", "transpose",
             "frames", "fps")


def build_config(family: str, *, data: str = "digits", preset: str | None = None, overrides: Sequence[str] = (),
                 init_from: str | Path | None = None, adapter: str | None = None, **shortcuts: Any) -> RunConfig:
    """Family defaults, then the preset, then `--set` overrides, then shortcuts. With no preset named, the preset is
    "small", or for a wall-clock budget (minutes) the family's budget rule where it has one (budget_choice).

    Shortcuts are flags the CLI offers directly: steps, minutes, precision, seed (train.*),
    conditional, image_size, tokenizer, vocab_size (data.*); a value of None leaves the key alone.
    init_from: a run whose architecture (model.*), data settings (INHERITED) and weights the run starts from;
    the preset then sets only train.* keys. adapter: "lora" adds LoRA adapters (adapter.*).
    """
    fam = registry.get(family)
    cfg = RunConfig(family, fam.config_cls(), DataConfig(name=str(data)), TrainConfig(), __version__)
    chosen = budget_choice(family, preset, shortcuts.get("minutes"), init_from)
    if chosen is not None:
        for key, value in chosen.items():
            set_key(cfg, key, value)
    elif init_from is None:
        apply_preset(cfg, fam.presets, preset or "small")
    else:
        doc = base_config(Path(init_from), family)
        cfg.model = from_dict(fam.config_cls, doc["model"])
        for key in INHERITED:
            if key in doc.get("data", {}):
                set_key(cfg, f"data.{key}", doc["data"][key])
        for key, value in fam.presets.get(preset or "small", {}).items():
            if key.startswith("train."):
                set_key(cfg, key, value)
        cfg.init.run = str(init_from)
    if adapter is not None:
        cfg.adapter.type = adapter
    apply_overrides(cfg, list(overrides))
    _check_shortcuts(shortcuts)
    for key, value in shortcuts.items():
        if value is not None:
            apply_overrides(cfg, [f"{SHORTCUTS[key]}.{key}={value}"])
    if shortcuts.get("minutes") and shortcuts.get("steps") is None and not any(o.startswith("train.steps") for o in overrides):
        cfg.train.steps = 10**9  # a wall budget alone: let the clock decide
    validate_adaptation(cfg)
    return cfg


def budget_choice(family: str, preset: str | None, minutes: float | None,
                  init_from: str | Path | None = None) -> dict[str, Any] | None:
    """The keys the family's budget rule chooses for `--minutes` with no `--preset` (None where it does not apply:
    a preset named, no budget, a run started from another, whose architecture is fixed, or no rule)."""
    rule = registry.get(family).budget
    if rule is None or preset is not None or not minutes or init_from is not None:
        return None
    return rule(float(minutes))


def _check_shortcuts(shortcuts: dict) -> None:
    unknown = sorted(set(shortcuts) - set(SHORTCUTS))
    if unknown:
        raise UnsupportedError(f"unknown option {unknown[0]!r}; expected one of {', '.join(SHORTCUTS)}")


def _fresh_dir(family: str, data: str) -> Path:
    base = Path("runs") / f"{family}-{Path(data).name or 'data'}"
    path, i = base, 2
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def train(family: str, data: str | None = None, *, out: str | Path | None = None, preset: str | None = None,
          overrides: Sequence[str] = (), resume: str | Path | None = None, progress: bool = True,
          log=print, prepare: Callable[..., Prepared], init_from: str | Path | None = None, adapter: str | None = None,
          **shortcuts: Any) -> Run:
    """Train a family on a dataset ("digits" when None) and return the run. See build_config for the shortcuts.

    resume: a run folder to continue from its last checkpoint (the config comes from the run;
    only train.* keys, steps, minutes and precision may change; other flags must match the run).
    The run folder is locked for writing for the whole training; nothing in it changes on resume
    until the checkpoint has loaded into the model.
    prepare(cfg, run_dir, resume=) -> Prepared: the data for the family; sets the data-derived fields of
    cfg.model in place (genlab.kinds.prepare: the family's kind does it).
    """
    clock_start = time.perf_counter()  # a wall-clock budget covers the whole command, data preparation included
    main = int(os.environ.get("RANK", "0")) == 0
    if resume is not None:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise RunError(f"cannot resume: {run_dir} is not a folder; expected a genlab run folder")
        if init_from is not None or adapter is not None:
            raise ConfigError(f"cannot resume {run_dir} with --init-from or --adapter: the run records its base and "
                              "adapter in its config.json; drop them")
    else:
        data = "digits" if data is None else str(data)
        cfg = build_config(family, data=data, preset=preset, overrides=overrides, init_from=init_from,
                           adapter=adapter, **shortcuts)
        chosen = budget_choice(family, preset, shortcuts.get("minutes"), init_from)
        if chosen is not None and main:
            log(f"no --preset: for {shortcuts['minutes']:g} minutes the {family} budget rule chose "
                + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in chosen.items()) + " (any --set still wins)")
        run_dir = Path(out) if out is not None else _fresh_dir(family, data)
    created = main and not run_dir.exists()
    before = set() if created or not main else {p.name for p in run_dir.iterdir()}
    with write_lock(run_dir) if main else contextlib.nullcontext():
        try:
            return _train_locked(run_dir, family, data, cfg if resume is None else None, overrides, shortcuts,
                                 resume is not None, main, progress, log, prepare, clock_start)
        except BaseException:
            if main and resume is None and not (run_dir / CHECKPOINT).exists():
                _remove_new(run_dir, created, before)
            raise


def _remove_new(run_dir: Path, created: bool, before: set[str]) -> None:
    """A new run that failed before its first checkpoint leaves nothing behind: the folder if this training
    made it, else what it added (but the lock file, which a later writer may be waiting on)."""
    if created:
        shutil.rmtree(run_dir)
        return
    for path in run_dir.iterdir():
        if path.name in before or path.name == LOCK:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _train_locked(run_dir: Path, family: str, data: str | None, cfg: RunConfig | None, overrides: Sequence[str],
                  shortcuts: dict, resume: bool, main: bool, progress: bool, log, prepare, clock_start: float) -> Run:
    """train() with the run folder locked (by rank 0)."""
    if main:
        recover(run_dir)  # finish (or discard) a checkpoint commit a killed writer left behind
    if resume:
        cfg = _resume_config(run_dir, family, data, overrides, shortcuts)
    elif has_checkpoint(run_dir):
        raise RunError(f"{run_dir} already holds a trained run; pass --resume {run_dir} to continue it, "
                       "or choose another --out")
    if cfg.init.run and not resume:  # stored relative to the run, so the two folders can move together
        cfg.init.run = relative_to(run_dir, Path(cfg.init.run))
    prep = prepare(cfg, run_dir, resume=resume)
    torch.manual_seed(cfg.train.seed)  # the same seed gives the same initial weights
    model = registry.build(cfg.family, cfg.model, "model.* settings")
    if cfg.init.run:
        _start_from_base(model, cfg, run_dir, prep, log if main and not resume else (lambda _: None))
    doc = {**json.loads(run_config_to_json(cfg)), "dataset": prep.describe}
    files = {CONFIG: json.dumps(doc, indent=2).encode()}  # committed (and hashed) with every checkpoint
    if prep.tokenizer is not None:
        files[TOKENIZER] = prep.tokenizer.to_json().encode()
    if main and not resume:  # a fresh run's previews read it; a resumed one changes only at its checkpoint
        atomic_write(run_dir / CONFIG, files[CONFIG])
    result = fit(cfg, model, prep.make_loader, prep.val_batches, run_dir, resume=resume,
                 progress=progress, preview=prep.preview, info={"data": cfg.data.name, "started": time.time()},
                 log=log, files=files, clock_start=clock_start)
    return Run(run_dir, cfg, result)


def _start_from_base(model, cfg: RunConfig, run_dir: Path, prep: Prepared, log) -> None:
    """The base run's weights into the model, then the adapters; says what did not come over whole."""
    report = init_weights(model, cfg, run_dir, [str(c) for c in prep.describe.get("classes") or []])
    log(f"starting from {cfg.init.run} ({cfg.init.weights} weights, SHA-256 {cfg.init.sha256[:12]}...)")
    for line in report:
        log(f"  {line}")
    adapted = adapt(model, cfg)
    if adapted:
        n = sum(p.numel() for p in model.parameters())
        k = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"LoRA rank {cfg.adapter.rank} on {len(adapted)} layers; training {k:,} of {n:,} parameters "
            f"({100 * k / n:.1f}%){'' if cfg.adapter.freeze else ', the base too (adapter.freeze=false)'}")


def _resume_config(run_dir: Path, family: str, data: str | None, overrides: Sequence[str], shortcuts: dict) -> RunConfig:
    """The run's config with the allowed changes; a flag that disagrees with the run is a ConfigError."""
    if not has_checkpoint(run_dir):
        raise RunError(f"cannot resume: {run_dir} has no checkpoint.json (was it trained by genlab?)")
    derived = read_config(run_dir).get("derived")
    if derived:
        raise RunError(f"cannot resume {run_dir}: it was made by `genlab {derived.get('operation')}`, not by "
                       f"training, and holds no optimizer state; continue it with --init-from {run_dir}")
    cfg = load_config(run_dir)
    _check_shortcuts(shortcuts)
    fixed = {"family": (family, "family", cfg.family), "--data": (data, "data.name", cfg.data.name)}
    for key, section in SHORTCUTS.items():
        if key not in RESUME_MAY_CHANGE:
            fixed[f"--{key.replace('_', '-')}"] = (shortcuts.get(key), f"{section}.{key}",
                                                   getattr(getattr(cfg, section), key))
    for flag, (given, where, value) in fixed.items():
        if given is not None and str(given) != str(value):
            raise ConfigError(f"cannot resume {run_dir} with {flag} {given}: the run has {where}={value} "
                              f"(in {run_dir / CONFIG}); drop {flag} or pass the run's value")
    changes = list(overrides) + [f"train.{k}={v}" for k, v in shortcuts.items()
                                 if v is not None and k in RESUME_MAY_CHANGE]
    bad = [o for o in changes if not o.startswith("train.")]
    if bad:
        raise ConfigError(f"cannot change {', '.join(bad)} when resuming; only train.* keys may change")
    apply_overrides(cfg, changes)
    return cfg
