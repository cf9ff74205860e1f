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

A run folder is untrusted input (people share them). Readers never write to it: they ignore a
pending commit, refuse symbolic links and check every file a run is rebuilt from against the
hashes in checkpoint.json (format 2 also hashes config.json and tokenizer.json; a manifest without
a "format" predates that and is read without those two hashes). Only a writer holding
`write_lock` rolls a commit forward, and only the fixed names in COMMITTED, each checked first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from genlab.errors import RunError

WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.json"
CONFIG = "config.json"
OPTIMIZER = "state/optimizer.safetensors"
TRAINER = "state/trainer.json"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"
EVAL = "eval.json"
PENDING = ".pending"
LOCK = ".lock"
EMA_PREFIX = "ema/"
FORMAT = 2  # checkpoint.json "format"; 2 hashes config.json and tokenizer.json, runs before it have no "format"
COMMITTED = (WEIGHTS, OPTIMIZER, TRAINER, CONFIG, TOKENIZER, CHECKPOINT)  # the only names a commit may hold
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def _discard(pending: Path) -> None:
    if pending.is_symlink():
        pending.unlink()
    elif pending.exists():
        shutil.rmtree(pending)


def commit(run_dir: str | Path, files: dict[str, bytes]) -> None:
    """Atomically replace a set of files in the run folder (journalled, see module docstring).

    Only the writer holding `write_lock` commits; `files` may hold only the names in COMMITTED.
    """
    run_dir = Path(run_dir)
    unknown = sorted(set(files) - set(COMMITTED))
    if unknown:
        raise RunError(f"cannot commit {unknown} to {run_dir}: a checkpoint holds only {', '.join(COMMITTED)}")
    pending = run_dir / PENDING
    _discard(pending)
    for rel, data in files.items():
        _fsync_write(pending / rel, data)
    atomic_write(pending / "COMPLETE", json.dumps(sorted(files)))  # the commit point
    _roll_forward(run_dir)


def inside(run_dir: Path, rel: str) -> Path:
    """run_dir/rel, refusing a symbolic link anywhere below run_dir and anything but a regular file there."""
    path = run_dir
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink():
            raise RunError(f"{path} is a symbolic link; a run folder must hold its own files "
                           f"(refusing to follow it out of {run_dir})")
    if path.exists() and not path.is_file():
        raise RunError(f"{path} is not a regular file; expected the run's {rel}")
    return path


def _journal(run_dir: Path) -> list[str]:
    """The names a complete pending commit lists, each one of COMMITTED and a regular file (or gone)."""
    pending = run_dir / PENDING
    if pending.is_symlink() or not pending.is_dir():
        raise RunError(f"{pending} is not a folder; delete it to discard the interrupted checkpoint")
    names = read_json(inside(pending, "COMPLETE"))
    if not isinstance(names, list) or any(n not in COMMITTED for n in names):
        raise RunError(f"{pending / 'COMPLETE'} lists {names!r:.200}; a checkpoint commit holds only "
                       f"{', '.join(COMMITTED)}. Refusing to roll it forward; delete {pending} to discard it")
    for rel in names:
        inside(pending, rel)
        inside(run_dir, rel)
    return names


def _roll_forward(run_dir: Path) -> None:
    """Move a complete commit's files into place after checking each against its pending manifest."""
    pending = run_dir / PENDING
    names = _journal(run_dir)
    # checkpoint.json moves last, so while it is pending every other pending file is checked against it
    # (a commit by an earlier genlab moved it first: then the run's checkpoint.json is the new one)
    hashes = read_manifest(pending if (pending / CHECKPOINT).exists() else run_dir)["files"]
    checked = [rel for rel in names if rel != CHECKPOINT]
    for rel in checked:
        if (pending / rel).exists() and sha256((pending / rel).read_bytes()) != hashes.get(rel):
            raise RunError(f"{pending / rel} does not match the SHA-256 in its {CHECKPOINT}; refusing to roll "
                           f"the interrupted checkpoint forward (delete {pending} to discard it)")
    for rel in checked + [CHECKPOINT] * (CHECKPOINT in names):
        if (pending / rel).exists():
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(pending / rel, run_dir / rel)
    shutil.rmtree(pending)


def recover(run_dir: str | Path) -> None:
    """Finish a checkpoint commit that was complete when the process died, or discard a partial one.

    Writers only, under `write_lock`: readers leave a run folder as they found it.
    """
    pending = Path(run_dir) / PENDING
    if not pending.is_symlink() and (pending / "COMPLETE").exists():
        _roll_forward(Path(run_dir))
    else:
        _discard(pending)


@contextlib.contextmanager
def write_lock(run_dir: str | Path):
    """Hold the run folder's advisory write lock (flock on `.lock`, which holds the writer's PID).

    Creates the folder. A second writer gets a RunError naming the holder. The lock file stays
    behind (removing it would let a third writer lock a different inode); it does not make a
    folder a run: that takes checkpoint.json.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise RunError(f"cannot open the lock file {path}: {e.strerror}; expected a regular file") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run_dir} is being written by another genlab process (PID {_holder(fd)}, lock {path}); "
                           "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """The PID the write lock's holder wrote into the open lock file `fd`."""
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


def wait_for_writer(run_dir: str | Path, log=print) -> None:
    """Return once no genlab process holds `run_dir`'s write lock, waiting (and saying so) while one does.
    Creates nothing: a folder without a lock file has no writer."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another genlab process (PID {_holder(fd)}) is writing {run_dir}; waiting for it to finish ...")
            fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def parse_json(data: bytes | str, path: Path) -> Any:
    """`data` (the contents of `path`) as JSON; anything unreadable is a RunError naming the file."""
    try:
        return json.loads(data.decode() if isinstance(data, bytes) else data)  # genlab writes UTF-8
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: absurd nesting
        raise RunError(f"{path} is not valid JSON ({e}); the file is damaged") from None


def read_json(path: Path) -> Any:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise RunError(f"{path} is a symbolic link or not a regular file; refusing to read it")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path} is missing; is {path.parent} a genlab run folder?") from None
    return parse_json(data, path)


def read_manifest(run_dir: Path) -> dict:
    """checkpoint.json, checked: an object with an integer "step" and "files" mapping names to SHA-256 hex."""
    path = inside(run_dir, CHECKPOINT)
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise RunError(f"{path} holds a JSON {type(doc).__name__}; expected an object with \"step\" and \"files\"")
    files = doc.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) and _SHA256.fullmatch(v) for v in files.values()):
        raise RunError(f"{path}: \"files\" is {files!r:.80}; expected an object mapping file names to SHA-256 "
                       "hex strings")
    step, fmt = doc.get("step"), doc.get("format", 1)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise RunError(f"{path}: \"step\" is {step!r}; expected a non-negative integer")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= FORMAT:
        raise RunError(f"{path}: \"format\" is {fmt!r}; this genlab reads formats 1 to {FORMAT} (a newer genlab?)")
    return doc


def read_config(run_dir: Path) -> dict:
    """config.json (verified when the manifest hashes it), checked to be an object with "family" and "model"."""
    path = run_dir / CONFIG
    doc = parse_json(read_run_file(run_dir, CONFIG), path)
    if not isinstance(doc, dict):
        raise RunError(f"{path} holds a JSON {type(doc).__name__}; expected an object with family, model, data, train")
    if not isinstance(doc.get("family"), str):
        raise RunError(f"{path}: \"family\" is {doc.get('family')!r}; expected a family name")
    for key in ("model", "data", "train", "dataset"):
        if not isinstance(doc.get(key, {}), dict) or (key == "model" and key not in doc):
            raise RunError(f"{path}: \"{key}\" is {doc.get(key)!r:.80}; expected an object")
    return doc


def _pending_hint(run_dir: Path) -> str:
    return (f" An interrupted checkpoint is pending in {run_dir / PENDING}: resume training "
            "(genlab train --resume) to finish it." if (run_dir / PENDING).exists() else "")


def read_verified(run_dir: Path, rel: str, manifest: dict | None = None) -> bytes:
    """Read a checkpoint file and check it against the SHA-256 recorded in checkpoint.json."""
    manifest = manifest or read_manifest(run_dir)
    expected = manifest["files"].get(rel)
    path = inside(run_dir, rel)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path} is missing; the run has no complete checkpoint.{_pending_hint(run_dir)}") from None
    if expected is None:
        raise RunError(f"{path} has no SHA-256 in {CHECKPOINT}; refusing to load a file the checkpoint does not "
                       "vouch for")
    if sha256(data) != expected:
        raise RunError(f"{path} does not match the SHA-256 recorded in {CHECKPOINT} "
                       f"(expected {expected}, got {sha256(data)}): the file was modified or truncated; "
                       f"refusing to load it.{_pending_hint(run_dir)}")
    return data


def read_run_file(run_dir: Path, rel: str) -> bytes:
    """config.json or tokenizer.json: verified when checkpoint.json is of format 2 (which hashes both);
    read unverified from a run without a checkpoint or with an older manifest."""
    if inside(run_dir, CHECKPOINT).exists():
        manifest = read_manifest(run_dir)
        if manifest.get("format", 1) >= 2:
            return read_verified(run_dir, rel, manifest)
    try:
        return inside(run_dir, rel).read_bytes()
    except FileNotFoundError:
        raise RunError(f"{run_dir / rel} is missing; is {run_dir} a genlab run folder?") from None


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


def save_checkpoint(run_dir: str | Path, ck: Checkpoint, files: dict[str, bytes] | None = None) -> None:
    """Commit a checkpoint; `files` are other run files committed and hashed with it (config.json, tokenizer.json)."""
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
        **(files or {}),
        WEIGHTS: tensors_to_bytes(weights, {"format": "genlab", "step": str(ck.step)}),
        OPTIMIZER: tensors_to_bytes(opt_tensors),
        TRAINER: json.dumps({"step": ck.step, "optimizers": opt_meta, **ck.trainer}, indent=1).encode(),
    }
    manifest = {"step": ck.step, **ck.info, "format": FORMAT, "files": {rel: sha256(b) for rel, b in files.items()}}
    files[CHECKPOINT] = json.dumps(manifest, indent=2).encode()
    commit(run_dir, files)


def load_weights(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(model weights, EMA weights or None), verified against checkpoint.json."""
    tensors = load_tensors(Path(run_dir), WEIGHTS)
    model = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)} or None
    return model, ema


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """The last checkpoint, verified; a writer calls `recover` first."""
    run_dir = Path(run_dir)
    info = read_manifest(run_dir)
    model, ema = load_weights(run_dir)
    opt_tensors = load_tensors(run_dir, OPTIMIZER)
    path = run_dir / TRAINER
    trainer = parse_json(read_verified(run_dir, TRAINER, info), path)
    try:
        step, opt_meta = trainer.pop("step"), trainer.pop("optimizers")
        optimizers = {name: _unflatten_optimizer(name, opt_tensors, meta) for name, meta in opt_meta.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a structure no genlab wrote
        raise RunError(f"{path} lacks or misshapes {e}; expected the step and optimizer state genlab writes") from None
    if step != info["step"]:
        raise RunError(f"{path} is at step {step!r} but {CHECKPOINT} at step {info['step']}; the checkpoint is mixed")
    return Checkpoint(step, model, ema, optimizers, trainer, info)


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT).is_file()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl's rows. A torn last line (a write cut short by a crash or a full disk) is skipped with a
    warning; a damaged line before it is a RunError naming the file and the line."""
    path = inside(Path(run_dir), METRICS)
    if not path.exists():
        return []
    lines = [(i, line) for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    rows = []
    for i, line in lines:
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            row = None
        if isinstance(row, dict) and isinstance(row.get("step", 0), (int, float)):
            rows.append(row)
        elif i == lines[-1][0]:
            warnings.warn(f"{path}, line {i}: skipped a torn last line ({line[:40]!r}); resuming the run drops it",
                          RuntimeWarning, stacklevel=2)
        else:
            raise RunError(f"{path}, line {i}: {line[:40]!r} is not a JSON object with a numeric \"step\"; "
                           "the file is damaged")
    return rows


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint we resume from (and a torn last line)."""
    rows = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    atomic_write(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def run_owning(path: str | Path) -> Path | None:
    """The run folder that `path` is one of the files of (weights, config, checkpoint, state/, metrics, eval,
    tokenizer, the journal), or None: writing an output there would destroy the run."""
    path = Path(path).absolute()
    for folder in path.parents:
        if (folder / CHECKPOINT).is_file():
            owned = {Path(name).parts[0] for name in COMMITTED} | {METRICS, EVAL, LOCK, PENDING}
            return folder if path.relative_to(folder).parts[0] in owned else None
    return None
