"""The run folder: the only thing that crosses from training to sampling, evaluation and serving.

    runs/<name>/
      config.json          family, model, data and training config, genlab version, dataset description
      model.safetensors    weights, and EMA weights under "ema/<key>"
      checkpoint.json      step, wall time, and the SHA-256 of every checkpoint file
      state/               optimizer tensors (safetensors) and trainer state (JSON: step, LR horizon)
      metrics.jsonl        one JSON object per logged step
      eval.json            the last evaluation
      samples/             grids written during training

No pickles: tensors go through safetensors, everything else through JSON. A checkpoint is several
files, so it is committed like a journal: all files are first written under `.pending/` with a
COMPLETE marker, then moved into place. A process killed at any point leaves either the old or the
new checkpoint, never a mix; `recover()` finishes or discards an interrupted commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.json"
CONFIG = "config.json"
OPTIMIZER = "state/optimizer.safetensors"
TRAINER = "state/trainer.json"
EMA_PREFIX = "ema/"


class RunError(ValueError):
    """A run folder that is missing, incomplete or tampered with."""


def _fsync_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write to a temp file beside `path`, fsync, then rename over it (str is written as UTF-8).

    The temp name is random, so concurrent writers never share one, and a failed write removes it.
    The file gets the umask's mode (unlike mkstemp's private 0600).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _fsync_write(tmp, data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    # clone(): safetensors refuses tensors sharing storage (e.g. tied weights)
    return st_save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata)


def commit(run_dir: str | Path, files: dict[str, bytes]) -> None:
    """Atomically replace a set of files in the run folder (journalled, see module docstring)."""
    run_dir = Path(run_dir)
    pending = run_dir / ".pending"
    if pending.exists():
        shutil.rmtree(pending)
    for rel, data in files.items():
        _fsync_write(pending / rel, data)
    atomic_write(pending / "COMPLETE", json.dumps(sorted(files)))  # the commit point
    _roll_forward(run_dir)


def _roll_forward(run_dir: Path) -> None:
    pending = run_dir / ".pending"
    for rel in json.loads((pending / "COMPLETE").read_text()):
        if (pending / rel).exists():
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(pending / rel, run_dir / rel)
    shutil.rmtree(pending)


def recover(run_dir: str | Path) -> None:
    """Finish a checkpoint commit that was complete when the process died, or discard a partial one."""
    pending = Path(run_dir) / ".pending"
    if (pending / "COMPLETE").exists():
        _roll_forward(Path(run_dir))
    elif pending.exists():
        shutil.rmtree(pending)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} is missing; is {path.parent} a genlab run folder?") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is not valid JSON ({e}); the file is damaged") from None


def read_verified(run_dir: Path, rel: str) -> bytes:
    """Read a checkpoint file and check it against the SHA-256 recorded in checkpoint.json."""
    expected = read_json(run_dir / CHECKPOINT)["files"].get(rel)
    try:
        data = (run_dir / rel).read_bytes()
    except FileNotFoundError:
        raise RunError(f"{run_dir / rel} is missing; the run has no complete checkpoint") from None
    if expected is None or sha256(data) != expected:
        raise RunError(f"{run_dir / rel} does not match the SHA-256 recorded in {CHECKPOINT} "
                       f"(expected {expected}, got {sha256(data)}): the file was modified or truncated; "
                       "refusing to load it")
    return data


def load_tensors(run_dir: Path, rel: str) -> dict[str, torch.Tensor]:
    data = read_verified(run_dir, rel)
    try:
        return st_load(data)
    except SafetensorError as e:
        raise RunError(f"{run_dir / rel} is not a readable safetensors file: {e}") from None


@dataclass
class Checkpoint:
    """Everything needed to resume training exactly."""

    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    optimizers: dict[str, dict]          # name -> torch optimizer state_dict
    trainer: dict[str, Any]              # JSON-able: LR horizon, elapsed time, ...
    info: dict[str, Any]                 # JSON-able: wall time, device, parameter count, ...


def _flatten_optimizer(name: str, sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{name}/{idx}/{key}"] = value
            else:
                scalars[f"{idx}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        opt, idx, k = key.split("/", 2)
        if opt == name:
            state.setdefault(int(idx), {})[k] = value
    for key, value in meta["scalars"].items():
        idx, k = key.split("/", 1)
        state.setdefault(int(idx), {})[k] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: str | Path, ck: Checkpoint) -> None:
    run_dir = Path(run_dir)
    weights = dict(ck.model)
    if ck.ema is not None:
        weights.update({EMA_PREFIX + k: v for k, v in ck.ema.items()})
    opt_tensors, opt_meta = {}, {}
    for name, sd in ck.optimizers.items():
        t, meta = _flatten_optimizer(name, sd)
        opt_tensors.update(t)
        opt_meta[name] = meta
    files = {
        WEIGHTS: tensors_to_bytes(weights, {"format": "genlab", "step": str(ck.step)}),
        OPTIMIZER: tensors_to_bytes(opt_tensors),
        TRAINER: json.dumps({"step": ck.step, "optimizers": opt_meta, **ck.trainer}, indent=1).encode(),
    }
    manifest = {"step": ck.step, **ck.info, "files": {rel: sha256(b) for rel, b in files.items()}}
    files[CHECKPOINT] = json.dumps(manifest, indent=2).encode()
    commit(run_dir, files)


def load_weights(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(model weights, EMA weights or None), verified against checkpoint.json."""
    run_dir = Path(run_dir)
    recover(run_dir)
    tensors = load_tensors(run_dir, WEIGHTS)
    model = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)} or None
    return model, ema


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    run_dir = Path(run_dir)
    model, ema = load_weights(run_dir)
    opt_tensors = load_tensors(run_dir, OPTIMIZER)
    trainer = json.loads(read_verified(run_dir, TRAINER))
    opt_meta = trainer.pop("optimizers")
    optimizers = {name: _unflatten_optimizer(name, opt_tensors, meta) for name, meta in opt_meta.items()}
    info = read_json(run_dir / CHECKPOINT)
    return Checkpoint(trainer.pop("step"), model, ema, optimizers, trainer, info)


def has_checkpoint(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    if run_dir.exists():
        recover(run_dir)
    return (run_dir / CHECKPOINT).exists()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint we resume from."""
    rows = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    atomic_write(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
