"""Test helpers for exact resume: record which training batches a run consumes, and kill a CLI run with
SIGKILL at a chosen point (inside a training step, while a checkpoint's .pending journal is being written,
or halfway through moving a committed checkpoint into place).

As a script: python tests/resume_util.py WHERE N RECORD CLI-ARGS...
  WHERE is "step" (after the N-th optimizer step), "write" (the N-th file written under .pending/, left
  half written), "move" (before the N-th file is moved out of .pending/) or "none"; on a normal exit the
  consumed batch indices are written to RECORD as a JSON list.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import genlab
import genlab.kinds
import genlab.runs
from genlab.api import load_config
from genlab.cli import main as cli_main
from genlab.training import trainer


def record_batches(seen: list[int], setattr_=setattr) -> None:
    """Make every loader built by genlab.kinds.prepare (what genlab.train hands the trainer) append the index i
    of each batch(i) to `seen`.

    Pass pytest's monkeypatch.setattr as `setattr_` to undo the patch after the test.
    """
    real_prepare = genlab.kinds.prepare

    def prepare(*args, **kwargs):
        prep = real_prepare(*args, **kwargs)
        make = prep.make_loader

        def make_loader(**kw):
            loader = make(**kw)
            batch = loader.batch
            loader.batch = lambda i: seen.append(i) or batch(i)
            return loader

        prep.make_loader = make_loader
        return prep

    setattr_(genlab.kinds, "prepare", prepare)   # genlab.train looks it up at each call


TIMING = ("time", "items_per_s", "elapsed", "wall_time_s")   # the only values allowed to differ


def assert_same_training(a: Path, b: Path) -> None:
    """Two run folders hold the same training: weights and EMA, optimizer tensors, trainer state and every
    metrics row (all bit for bit, timings aside)."""
    wa, wb = load_file(a / genlab.runs.WEIGHTS), load_file(b / genlab.runs.WEIGHTS)
    assert wa.keys() == wb.keys(), "the weight (or EMA) tensors differ in name"
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == [], "resumed weights differ"
    oa, ob = load_file(a / genlab.runs.OPTIMIZER), load_file(b / genlab.runs.OPTIMIZER)
    assert oa.keys() == ob.keys() and oa, "the optimizer state differs in name (or is empty)"
    assert [k for k in oa if not torch.equal(oa[k], ob[k])] == [], "resumed optimizer state differs"
    ta, tb = (json.loads((r / genlab.runs.TRAINER).read_text()) for r in (a, b))
    assert _untimed(ta) == _untimed(tb)
    ma, mb = ([_untimed(row) for row in genlab.runs.read_metrics(r)] for r in (a, b))
    assert ma == mb, "the metrics rows differ (a step ran twice, was skipped, or computed something else)"


def _untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(where: str, n: int) -> None:
    calls = [0]

    def hit() -> bool:
        calls[0] += 1
        return calls[0] == n

    if where == "step":
        real_step = trainer.Stepper.step

        def step(self, group, out):
            real_step(self, group, out)
            if hit():
                _die()

        trainer.Stepper.step = step
    elif where == "write":
        real_write = genlab.runs._fsync_write

        def write(path, data):
            if ".pending" in Path(path).parts and hit():
                real_write(path, data[: len(data) // 2])
                _die()
            real_write(path, data)

        genlab.runs._fsync_write = write
    elif where == "move":
        real_replace = os.replace

        def replace(src, dst):
            if ".pending" in Path(src).parts and ".pending" not in Path(dst).parts and hit():
                _die()
            real_replace(src, dst)

        os.replace = replace
    elif where != "none":
        raise SystemExit(f"resume_util: unknown kill point {where!r}")


def _main() -> int:
    where, n, record = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    seen: list[int] = []
    record_batches(seen)
    _install_kill(where, n)
    rc = cli_main(sys.argv[4:])
    record.write_text(json.dumps(seen))
    return rc


if __name__ == "__main__":
    raise SystemExit(_main())


def check_exact_resume(family: str, data: str, overrides: list[str], tmp_path: Path, monkeypatch, **train) -> None:
    """Train `family` on `data` for 20 steps into tmp_path/a, copying the folder to tmp_path/b when the step-10
    checkpoint lands (overrides must set train.ckpt_every=10 and a log_every dividing 10); resume the copy and
    check that only steps 10..19 ran again and that weights, EMA, optimizer state and metrics end bit-identical.
    `train`: more arguments of the first training (init_from=, adapter=)."""
    original = trainer.save_checkpoint

    def spy(run_dir, ck, *args, **kwargs):
        original(run_dir, ck, *args, **kwargs)
        if ck.step == 10 and run_dir == tmp_path / "a":
            shutil.copytree(run_dir, tmp_path / "b")

    monkeypatch.setattr(trainer, "save_checkpoint", spy)
    genlab.train(family, data=data, out=tmp_path / "a", preset="tiny", steps=20, overrides=overrides,
                 progress=False, log=lambda s: None, **train)
    before = (tmp_path / "b" / "metrics.jsonl").read_text()
    seen = []
    record_batches(seen, monkeypatch.setattr)
    genlab.train(family, resume=tmp_path / "b", steps=20, progress=False, log=lambda s: None)
    accum = load_config(tmp_path / "b").train.accum_steps
    assert seen == list(range(10 * accum, 20 * accum)), "resume did not run exactly the remaining steps"
    assert (tmp_path / "b" / "metrics.jsonl").read_text().startswith(before)
    assert_same_training(tmp_path / "a", tmp_path / "b")
