"""The training loop. It knows nothing about families: it calls `model.train_step(batch, stepper)`.

Determinism: batch i is a pure function of (seed, i, rank) (data/loader.py) and the global torch RNG
is reseeded from (seed, step, rank) before every step, so a run resumed from a checkpoint makes
exactly the same updates as an uninterrupted one, with no RNG state to carry.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from genlab.config import RunConfig, validate_train
from genlab.errors import RunError, TrainingDiverged
from genlab.models.base import eval_mode, load_saved_state, saved_state
from genlab.runs import Checkpoint, load_checkpoint, read_metrics, save_checkpoint, truncate_metrics
from genlab.training.distributed import Dist, setup, teardown
from genlab.training.optim import EMA, build_optimizers, load_optimizer_state, lr_factor, set_lr
from genlab.training.progress import TrainProgress
from genlab.version import __version__


class _NonFinite(Exception):
    def __init__(self, group: str, value: float):
        self.group, self.value = group, value


class Stepper:
    """What `train_step` uses: forward through the (DDP-wrapped) model, backward and step one group."""

    def __init__(self, net: nn.Module, groups: dict[str, dict], opts: dict, cfg, d: Dist):
        self.net, self.groups, self.opts, self.cfg, self.d = net, groups, opts, cfg, d
        self.last_micro = True
        self.grad_norms: dict[str, float] = {}

    def autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(self.d.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, batch: dict, **kwargs) -> dict:
        with self.autocast():
            return self.net(batch, **kwargs)

    def step(self, group: str, out: dict) -> None:
        loss = out["loss"]
        if self.d.any(not bool(torch.isfinite(loss.detach()))):
            raise _NonFinite(group, float(loss.detach()))
        (loss.float() / self.cfg.accum_steps).backward()
        if not self.last_micro:
            return
        params = self.groups[group]["params"]
        if self.cfg.grad_clip > 0:
            self.grad_norms[group] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        self.opts[group].step()
        self.opts[group].zero_grad(set_to_none=True)


@dataclass
class Result:
    step: int
    elapsed: float
    items_per_s: float
    stopped: str                       # "steps", "minutes"
    unit: str = "img"                  # what items_per_s counts: img, tok, pair, text
    val: dict = field(default_factory=dict)


def _scalars(out: dict) -> dict[str, float]:
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.items()
            if (torch.is_tensor(v) and v.numel() == 1) or isinstance(v, float)}


@contextlib.contextmanager
def ema_weights(model: nn.Module, ema: EMA | None):
    """Temporarily swap the EMA weights in (for sampling previews and validation of the average)."""
    if ema is None:
        yield model
        return
    saved = {k: v.detach().clone() for k, v in saved_state(model).items()}
    load_saved_state(model, ema.state)
    try:
        yield model
    finally:
        load_saved_state(model, saved)


@torch.no_grad()
def validate(model: nn.Module, batches: Callable, seed: int) -> dict[str, float]:
    """Mean of the loss dict over the validation batches, under a fixed RNG (comparable across steps)."""
    totals: dict[str, float] = {}
    n = 0
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in batches():
            k = len(next(iter(batch.values())))  # rows in this batch
            for key, v in _scalars(model.loss(batch)).items():
                totals[key] = totals.get(key, 0.0) + v * k
            n += k
    return {key: v / max(n, 1) for key, v in totals.items()}


def fit(cfg: RunConfig, model: nn.Module, make_loader: Callable, val_batches: Callable, run_dir: str | Path, *,
        resume: bool = False, progress: bool = True, preview: Callable | None = None,
        info: dict | None = None, log: Callable[[str], None] = print, files: dict[str, bytes] | None = None,
        clock_start: float | None = None) -> Result:
    """Train `model` into `run_dir`.

    make_loader(rank=, world=, device=) -> an object whose `batch(i)` is the i-th training micro-batch
    of that rank (optionally with `unit` and `items_per_batch` for the throughput figure).
    val_batches(device) -> iterable of validation batches.
    preview(model, step, run_dir) -> (scalars, warning or None): writes samples; the scalars are logged
    under "watch/" and the warning is printed (e.g. a collapsing class histogram).
    files: other run files committed with every checkpoint (config.json, tokenizer.json).
    clock_start: the time.perf_counter() at which the command began: a wall-clock budget (train.minutes) counts
    from there, data preparation included (default: now).
    On resume nothing in `run_dir` changes until the checkpoint has loaded into the model.
    """
    tc = cfg.train
    validate_train(tc)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    d = setup()
    run_dir = Path(run_dir)
    try:
        return _fit(cfg, model, make_loader, val_batches, run_dir, d, resume, progress, preview, info or {}, log,
                    files or {}, time.perf_counter() if clock_start is None else clock_start)
    finally:
        teardown(d)


def _restore(ck: Checkpoint, model: nn.Module, ema: EMA | None, opts: dict, run_dir: Path, device) -> None:
    """Load a checkpoint into the model, EMA and optimizers; a mismatch is a RunError (nothing was written yet)."""
    try:
        load_saved_state(model, ck.model)
        if ema is not None:
            ema.state = {k: v.to(device) for k, v in (ck.ema or saved_state(model)).items()}
        if set(ck.optimizers) != set(opts):
            raise ValueError(f"optimizers {sorted(ck.optimizers)}, the model has {sorted(opts)}")
        for name, sd in ck.optimizers.items():
            load_optimizer_state(opts[name], sd)
    except (RuntimeError, ValueError, KeyError) as e:
        raise RunError(f"cannot resume {run_dir}: its checkpoint does not fit the model built from its config and "
                       f"the current data ({' '.join(str(e).split())[:300]}); the run folder is left as it was") from None


def _fit(cfg, model, make_loader, val_batches, run_dir, d: Dist, resume, progress, preview, info, log,
         files, clock_start: float) -> Result:
    tc = cfg.train
    model.to(d.device).train()
    groups = model.param_groups(tc)
    opts = build_optimizers(groups)
    ema = EMA(model, tc.ema) if tc.ema > 0 else None
    # horizon: the step the cosine ends at; warm_s: the elapsed seconds when warmup ended (a budget's schedule
    # runs on the time after it)
    state = {"horizon": tc.steps, "elapsed": 0.0, "warm_s": None}
    budget = tc.minutes * 60
    start = 0
    if resume:
        ck = load_checkpoint(run_dir)
        _restore(ck, model, ema, opts, run_dir, d.device)
        start = ck.step
        state.update({k: ck.trainer[k] for k in state if k in ck.trainer})
        if start >= tc.steps:  # a finished run: nothing to train, and nothing in its folder changes
            log(f"{run_dir} is already at step {start} (train.steps={tc.steps}); nothing to do "
                "(pass a larger --steps to train further)")
            rows = [r for r in read_metrics(run_dir) if any(k.startswith("val/") for k in r)]
            val = {k[4:]: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("val/")}
            return Result(start, state["elapsed"], 0.0, "steps", val=val)
        if d.main:
            truncate_metrics(run_dir, start)
    net = model
    if d.world > 1:
        net = DistributedDataParallel(model, find_unused_parameters=len(groups) > 1)
    loader = make_loader(rank=d.rank, world=d.world, device=d.device)
    unit = getattr(loader, "unit", "img")
    val_data = lambda: val_batches(d.device)  # noqa: E731
    stepper = Stepper(net, groups, opts, tc, d)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {**info, "parameters": n_params, "trainable_parameters": n_trainable, "world_size": d.world,
            "device": str(d.device), "precision": tc.precision, "genlab_version": __version__,
            "torch_version": torch.__version__}

    def checkpoint(step: int) -> None:
        t = time.perf_counter()
        if d.main:
            save_checkpoint(run_dir, Checkpoint(
                step, saved_state(model), ema.state if ema else None,
                {k: o.state_dict() for k, o in opts.items()},
                {k: state[k] for k in ("horizon", "elapsed", "warm_s")},
                {**info, "wall_time_s": round(state["elapsed"], 2)}), files)
        d.barrier()
        cost["checkpoint"] = time.perf_counter() - t

    metrics = open(run_dir / "metrics.jsonl", "a") if d.main else None
    tb = _tensorboard(run_dir) if d.main else None
    items_per_step = getattr(loader, "items_per_batch", tc.batch_size) * tc.accum_steps * d.world
    bar = TrainProgress(tc.steps, start, enabled=progress and d.main, unit=f"{unit}/s", budget_s=budget, log=log,
                        every_s=tc.progress_every)
    last_val: dict = {}
    running: dict[str, float] = {}   # sums of the logged scalars over the window
    seen: dict[str, int] = {}        # the steps in the window that logged each
    cost = {"checkpoint": 0.0}   # the last checkpoint's seconds: a budget keeps room for the final one
    t0, t_window, n_window = time.perf_counter(), time.perf_counter(), 0
    # the budget counts from the command's start: this session's preparation, plus a resumed run's earlier time
    elapsed0, step, stopped = state["elapsed"] + (t0 - clock_start), start, "steps"

    def emit(row: dict) -> None:
        if metrics:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        if tb:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    tb.add_scalar(k, v, row["step"])

    try:
        with bar:
            while step < tc.steps:
                if budget and d.any(state["elapsed"] + cost["checkpoint"] >= budget):
                    stopped = "minutes"
                    break
                torch.manual_seed(tc.seed * 1_000_003 + step * 1009 + d.rank)
                lr, fraction = 0.0, _budget_fraction(state, step, tc.warmup_steps, budget)
                for opt in opts.values():
                    lr = set_lr(opt, lr_factor(step, tc.warmup_steps, state["horizon"], tc.min_lr_ratio, fraction))
                outs = []
                for k in range(tc.accum_steps):
                    stepper.last_micro = k == tc.accum_steps - 1
                    outs.append(_scalars(model.train_step(loader.batch(step * tc.accum_steps + k), stepper)))
                step += 1
                if ema is not None:
                    ema.update(model, step)
                state["elapsed"] = elapsed0 + time.perf_counter() - t0
                if budget and d.world > 1:  # every rank follows rank 0's clock, so their schedules agree
                    state["elapsed"] = d.broadcast_int(round(state["elapsed"] * 1e6)) / 1e6
                n_window += 1
                for key in dict.fromkeys(k for o in outs for k in o):  # a family may log a key in some steps only
                    values = [o[key] for o in outs if key in o]      # (ldm: the reconstruction, in its first stage)
                    running[key] = running.get(key, 0.0) + sum(values) / len(values)
                    seen[key] = seen.get(key, 0) + 1
                if step % tc.log_every == 0 or step == tc.steps:
                    dt = time.perf_counter() - t_window
                    row = {"step": step, "time": round(state["elapsed"], 3), "lr": lr,
                           "items_per_s": round(n_window * items_per_step / dt, 2)}
                    row.update({f"train/{k}": v / seen[k] for k, v in running.items()})
                    row.update({f"grad_norm/{k}": v for k, v in stepper.grad_norms.items()})
                    stepper.grad_norms = {}   # a group not stepped in the next window is not logged again
                    emit(row)
                    bar.update(step, row["train/loss"] if "train/loss" in row else float("nan"), row["items_per_s"],
                               lr=lr, elapsed=state["elapsed"])
                    running, seen, t_window, n_window = {}, {}, time.perf_counter(), 0
                if d.main and (step % tc.val_every == 0 or step == tc.steps):
                    last_val = _validate_and_watch(model, ema, val_data, tc.seed, step, emit, log)
                if d.main and preview is not None and (step % tc.sample_every == 0 or step == tc.steps):
                    with ema_weights(model, ema) as m:
                        scalars, warning = preview(m, step, run_dir)
                    if scalars:
                        emit({"step": step, **{f"watch/{k}": v for k, v in scalars.items()}})
                    if warning:
                        log(f"warning at step {step}: {warning}")
                if step % tc.ckpt_every == 0:
                    checkpoint(step)
        if d.main and not last_val:
            last_val = _validate_and_watch(model, ema, val_data, tc.seed, step, emit, log)
        checkpoint(step)
    except _NonFinite as e:
        msg = (f"training stopped: the loss of group {e.group!r} became {e.value} at step {step + 1}. "
               f"The last good checkpoint in {run_dir} is kept; try a lower train.lr, "
               "train.grad_clip=1.0 or --precision fp32")
        if d.main:
            emit({"step": step + 1, "diverged": e.group})
        raise TrainingDiverged(msg) from None
    finally:
        if metrics:
            metrics.close()
        if tb:
            tb.close()
    done = step - start
    return Result(step, state["elapsed"], done * items_per_step / max(state["elapsed"] - elapsed0, 1e-9),
                  stopped, unit, last_val)


def _budget_fraction(state: dict, step: int, warmup: int, budget: float) -> float:
    """The share of a wall-clock budget's post-warmup time used so far (0 without a budget or during warmup)."""
    if not budget or step < warmup:
        return 0.0
    if state["warm_s"] is None:
        state["warm_s"] = state["elapsed"]
    return min(1.0, (state["elapsed"] - state["warm_s"]) / max(budget - state["warm_s"], 1e-9))


def _validate_and_watch(model, ema, val_batches, seed, step, emit, log) -> dict:
    val = validate(model, val_batches, seed)
    row = {"step": step, **{f"val/{k}": v for k, v in val.items()}}
    warning = None
    with ema_weights(model, ema) as m:  # one swap for both the EMA validation and the watch
        if ema is not None:
            row.update({f"val_ema/{k}": v for k, v in validate(m, val_batches, seed).items()})
        scalars, warning = m.watch(torch.Generator().manual_seed(seed))
        row.update({f"watch/{k}": v for k, v in scalars.items()})
    if warning:
        log(f"warning at step {step}: {warning}")
    emit(row)
    return val


def _tensorboard(run_dir: Path):
    """TensorBoard scalars beside metrics.jsonl (skipped with a note if tensorboard is missing)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))
