"""What `import genlab` offers: train(), load(), sample(), evaluate(). The CLI is a thin layer over this."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from genlab import __version__, registry
from genlab.config import (ConfigError, DataConfig, RunConfig, TrainConfig, apply_overrides, apply_preset,
                           run_config_from_dict, run_config_to_json)
from genlab.data.images import load_images, split
from genlab.errors import UnsupportedError, UsageError
from genlab.prepare import run_tokenizer
from genlab.runs import (CHECKPOINT, CONFIG, LOCK, TOKENIZER, RunError, atomic_write, has_checkpoint, load_weights,
                         read_config, read_manifest, recover, write_lock)


@dataclass
class Run:
    """A trained run: its folder, resolved config and the training result."""

    path: Path
    config: RunConfig
    result: Any = None


def build_config(family: str, *, data: str = "digits", preset: str | None = None, overrides: Sequence[str] = (),
                 **shortcuts: Any) -> RunConfig:
    """Family defaults, then the preset ("small" when none is named), then `--set` overrides, then shortcuts.

    Shortcuts are flags the CLI offers directly: steps, minutes, precision, seed (train.*),
    conditional, image_size, tokenizer, vocab_size (data.*); a value of None leaves the key alone.
    """
    fam = registry.get(family)
    cfg = RunConfig(family, fam.config_cls(), DataConfig(name=str(data)), TrainConfig(), __version__)
    apply_preset(cfg, fam.presets, preset or "small")
    apply_overrides(cfg, list(overrides))
    sections = {"steps": "train", "minutes": "train", "precision": "train", "seed": "train",
                "conditional": "data", "image_size": "data", "tokenizer": "data", "vocab_size": "data"}
    for key, value in shortcuts.items():
        if key not in sections:
            raise UnsupportedError(f"unknown option {key!r}; expected one of {', '.join(sections)}")
        if value is not None:
            apply_overrides(cfg, [f"{sections[key]}.{key}={value}"])
    if shortcuts.get("minutes") and shortcuts.get("steps") is None and not any(o.startswith("train.steps") for o in overrides):
        cfg.train.steps = 10**9  # a wall budget alone: let the clock decide
    return cfg


def _fresh_dir(family: str, data: str) -> Path:
    base = Path("runs") / f"{family}-{Path(data).name or 'data'}"
    path, i = base, 2
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


# flags that --resume takes only with the run's own value: flag -> (section, key)
RESUME_FIXED = {"seed": ("train", "seed"), "image_size": ("data", "image_size"), "conditional": ("data", "conditional"),
                "tokenizer": ("data", "tokenizer"), "vocab_size": ("data", "vocab_size")}


def train(family: str, data: str | None = None, *, out: str | Path | None = None, preset: str | None = None,
          overrides: Sequence[str] = (), resume: str | Path | None = None, progress: bool = True,
          log=print, **shortcuts: Any) -> Run:
    """Train a family on a dataset ("digits" when None) and return the run. See build_config for the shortcuts.

    resume: a run folder to continue from its last checkpoint (the config comes from the run;
    only train.* keys, steps, minutes and precision may change; other flags must match the run).
    The run folder is locked for writing for the whole training; nothing in it changes on resume
    until the checkpoint has loaded into the model.
    """
    main = int(os.environ.get("RANK", "0")) == 0
    if resume is not None:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise RunError(f"cannot resume: {run_dir} is not a folder; expected a genlab run folder")
    else:
        data = "digits" if data is None else str(data)
        cfg = build_config(family, data=data, preset=preset, overrides=overrides, **shortcuts)
        run_dir = Path(out) if out is not None else _fresh_dir(family, data)
    created = main and not run_dir.exists()
    before = set() if created or not main else {p.name for p in run_dir.iterdir()}
    with write_lock(run_dir) if main else contextlib.nullcontext():
        try:
            return _train_locked(run_dir, family, data, cfg if resume is None else None, overrides, shortcuts,
                                 resume is not None, main, progress, log)
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
                  shortcuts: dict, resume: bool, main: bool, progress: bool, log) -> Run:
    """train() with the run folder locked (by rank 0)."""
    from genlab.prepare import prepare
    from genlab.training.trainer import fit

    if main:
        recover(run_dir)  # finish (or discard) a checkpoint commit a killed writer left behind
    if resume:
        cfg = _resume_config(run_dir, family, data, overrides, shortcuts)
    elif has_checkpoint(run_dir):
        raise RunError(f"{run_dir} already holds a trained run; pass --resume {run_dir} to continue it, "
                       "or choose another --out")
    prep = prepare(cfg, run_dir, resume=resume)
    torch.manual_seed(cfg.train.seed)  # the same seed gives the same initial weights
    model = registry.get(cfg.family).model_cls(cfg.model)
    doc = {**json.loads(run_config_to_json(cfg)), "dataset": prep.describe}
    files = {CONFIG: json.dumps(doc, indent=2).encode()}  # committed (and hashed) with every checkpoint
    if prep.tokenizer is not None:
        files[TOKENIZER] = prep.tokenizer.to_json().encode()
    if main and not resume:  # a fresh run's previews read it; a resumed one changes only at its checkpoint
        atomic_write(run_dir / CONFIG, files[CONFIG])
    result = fit(cfg, model, prep.make_loader, prep.val_batches, run_dir, resume=resume,
                 progress=progress, preview=prep.preview, info={"data": cfg.data.name, "started": time.time()},
                 log=log, files=files)
    return Run(run_dir, cfg, result)


def _resume_config(run_dir: Path, family: str, data: str | None, overrides: Sequence[str], shortcuts: dict) -> RunConfig:
    """The run's config with the allowed changes; a flag that disagrees with the run is a ConfigError."""
    if not has_checkpoint(run_dir):
        raise RunError(f"cannot resume: {run_dir} has no checkpoint.json (was it trained by genlab?)")
    cfg = load_config(run_dir)
    unknown = set(shortcuts) - set(RESUME_FIXED) - {"steps", "minutes", "precision"}
    if unknown:
        raise UnsupportedError(f"unknown option {sorted(unknown)[0]!r}; expected one of steps, minutes, precision, "
                               f"{', '.join(RESUME_FIXED)}")
    fixed = {"family": (family, "family", cfg.family), "--data": (data, "data.name", cfg.data.name)}
    for key, (section, name) in RESUME_FIXED.items():
        fixed[f"--{key.replace('_', '-')}"] = (shortcuts.get(key), f"{section}.{name}",
                                               getattr(getattr(cfg, section), name))
    for flag, (given, where, value) in fixed.items():
        if given is not None and str(given) != str(value):
            raise ConfigError(f"cannot resume {run_dir} with {flag} {given}: the run has {where}={value} "
                              f"(in {run_dir / CONFIG}); drop {flag} or pass the run's value")
    changes = list(overrides) + [f"train.{k}={v}" for k, v in shortcuts.items()
                                 if v is not None and k in ("steps", "minutes", "precision")]
    bad = [o for o in changes if not o.startswith("train.")]
    if bad:
        raise ConfigError(f"cannot change {', '.join(bad)} when resuming; only train.* keys may change")
    apply_overrides(cfg, changes)
    return cfg


def load_config(run_dir: str | Path) -> RunConfig:
    return _config_from_doc(read_config(Path(run_dir)), Path(run_dir) / CONFIG)


def _config_from_doc(doc: dict, path: Path) -> RunConfig:
    """A RunConfig from a config.json document already checked by runs.read_config; errors name `path`."""
    try:
        return run_config_from_dict(doc, registry.get(doc["family"]).config_cls)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def load(run_dir: str | Path, *, ema: bool = True, device: str | torch.device | None = None) -> nn.Module:
    """Rebuild a run's model from config.json and its (EMA, when present) weights; eval mode.

    The model carries `model.run_dir` and `model.run_config` for whoever needs provenance, and
    `model.classes`, the data's label names (empty when it has none).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a folder; expected a genlab run folder (runs/<name>)")
    doc = read_config(run_dir)
    cfg = _config_from_doc(doc, run_dir / CONFIG)
    classes = doc.get("dataset", {}).get("classes") or []
    if not isinstance(classes, list):
        raise RunError(f"{run_dir / CONFIG}: \"dataset.classes\" is {classes!r:.60}; expected a list of label names")
    model = registry.get(cfg.family).model_cls(cfg.model)
    weights, ema_weights = load_weights(run_dir)
    try:
        model.load_state_dict(ema_weights if ema and ema_weights is not None else weights)
    except RuntimeError as e:
        raise RunError(f"{run_dir}: the weights do not fit the model in config.json: {e}") from None
    model.run_dir, model.run_config = run_dir, cfg
    model.classes = classes
    # lexists: a symlinked tokenizer.json is refused, not skipped; a hashed one that is gone is refused too
    has_tokenizer = os.path.lexists(run_dir / TOKENIZER) or TOKENIZER in read_manifest(run_dir)["files"]
    model.tokenizer = run_tokenizer(run_dir, getattr(cfg.model, "vocab_size", None)) if has_tokenizer else None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def as_model(run: str | Path | nn.Module) -> nn.Module:
    """A loaded model as is, or a run folder loaded with `load`."""
    return run if isinstance(run, nn.Module) else load(run)


def sample(run: str | Path | nn.Module, n: int, *, cond: Any = None, seed: int = 0, **controls: Any) -> torch.Tensor:
    """n samples from a run (path or loaded model) with a seed: the same seed gives the same samples."""
    model = as_model(run)
    return model.sample(n, cond=cond, generator=torch.Generator().manual_seed(seed), **controls)


@torch.no_grad()
def reconstruct(run: str | Path | nn.Module, n: int = 16) -> torch.Tensor:
    """Held-out images interleaved row by row with their reconstructions: (2n, C, H, W) in [-1, 1]."""
    model = as_model(run)
    if not hasattr(model, "reconstruct"):
        raise UsageError(f"{model.family} runs cannot reconstruct; only ae and vae have an encoder")
    cfg = model.run_config
    _, val = split(load_images(cfg.data), cfg.data.val_fraction, cfg.data.seed)
    dev = next(model.parameters()).device
    x = val.images[:n].to(dev)
    y = val.labels[:n].to(dev) if model.config.num_classes and val.labels is not None else None
    rec = model.reconstruct(x, y)
    row = min(8, n)  # alternate rows: originals, then their reconstructions
    parts = [t for i in range(0, len(x), row) for t in (x[i:i + row], rec[i:i + row])]
    return torch.cat(parts).cpu()


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985): keeps Gaussian latents at a typical norm along the path."""
    omega = torch.acos((a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)))
    so = torch.sin(omega).clamp_min(1e-8)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


@torch.no_grad()
def interpolate(run: str | Path | nn.Module, seeds: Sequence[int] = (0, 1), *, frames: int = 10, rows: int = 8,
                label: int | None = None) -> torch.Tensor:
    """`rows` latent walks from seed[0]'s latents to seed[1]'s, `frames` each: (rows * frames, C, H, W)."""
    model = as_model(run)
    if not hasattr(model, "latent") or not hasattr(model, "decode"):
        raise UsageError(f"{model.family} runs have no latent space to walk; use an ae, vae or gan run")
    if frames < 2:
        raise UsageError(f"--frames {frames}: a walk needs at least 2 frames")
    if rows < 1:
        raise UsageError(f"--rows {rows}: expected at least one walk")
    za = model.latent(rows, torch.Generator().manual_seed(seeds[0]))
    zb = model.latent(rows, torch.Generator().manual_seed(seeds[1]))
    k = model.config.num_classes
    y = torch.as_tensor(label if label is not None else 0).expand(rows).to(za.device) if k else None
    path = torch.stack([slerp(za, zb, t) for t in torch.linspace(0, 1, frames).tolist()], dim=1)  # (rows, frames, d)
    ys = y.repeat_interleave(frames) if y is not None else None
    return model.decode(path.flatten(0, 1), ys).cpu()


def evaluate(run_dir: str | Path, **kwargs: Any) -> dict:
    """Evaluate a run and write its eval.json: image runs in a judge's feature space
    (genlab.evaluation.image_eval), text runs with text metrics (genlab.evaluation.text_eval)."""
    from genlab.evaluation.image_eval import evaluate_run
    from genlab.evaluation.text_eval import evaluate_text_run

    kind = registry.get(load_config(run_dir).family).kind
    return (evaluate_run if kind == "image" else evaluate_text_run)(Path(run_dir), **kwargs)


__all__ = ["Run", "train", "load", "sample", "evaluate", "build_config"]
