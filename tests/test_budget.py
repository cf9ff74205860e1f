"""A wall-clock budget (--minutes): the schedule follows the clock, the budget covers the whole command, and
progress is shown on a terminal and in a log file alike. Time is a fake clock here, so nothing is timed."""

import json
import math
import time

import pytest

from genlab import kinds
from genlab.loading import load_config
from genlab.training.optim import lr_factor
from genlab.training.progress import TrainProgress, clock
from genlab.training.run import train


class FakeClock:
    """time.perf_counter that advances `tick` seconds at every call, `slow` times as much for the first
    `slow_calls` calls (start-up is slow: a horizon guessed from the first steps comes out short): a run's
    timeline is the same on any machine."""

    def __init__(self, tick: float = 0.01, slow: float = 5.0, slow_calls: int = 300):
        self.t, self.tick, self.slow, self.left = 1000.0, tick, slow, slow_calls

    def __call__(self) -> float:
        self.left -= 1
        self.t += self.tick * (self.slow if self.left >= 0 else 1.0)
        return self.t


def test_lr_follows_the_furthest_of_steps_and_time():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)                       # warmup
    mid = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(mid)                      # by steps, half way
    assert lr_factor(20, 10, 10**9, 0.1, fraction=0.5) == pytest.approx(mid)      # by time, half way
    assert lr_factor(55, 10, 100, 0.1, fraction=1.0) == pytest.approx(0.1)       # the budget is spent
    assert lr_factor(99, 10, None, 0.1, fraction=0.0) == 1.0


def _budget_run(tmp_path, monkeypatch, name, prepare=kinds.prepare, minutes=0.2):
    monkeypatch.setattr(time, "perf_counter", FakeClock())
    train("vae", data="digits", out=tmp_path / name, preset="tiny", minutes=minutes,
                              overrides=["train.log_every=5", "train.val_every=100000", "train.sample_every=100000",
                                         "train.warmup_steps=5", "train.min_lr_ratio=0.1"],
                              progress=False, log=lambda s: None, prepare=prepare)
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "lr" in r], json.loads((tmp_path / name / "checkpoint.json").read_text())


def test_the_schedule_decays_with_the_clock_over_the_whole_budget(tmp_path, monkeypatch):
    rows, ck = _budget_run(tmp_path, monkeypatch, "a")
    budget, lr0 = 0.2 * 60, load_config(tmp_path / "a").train.lr
    lrs = [r["lr"] for r in rows]
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))                  # decays monotonically after warmup
    half = min(rows, key=lambda r: abs(r["time"] - budget / 2))          # half the budget: half way down
    assert 0.35 * lr0 < half["lr"] < 0.75 * lr0, half
    assert rows[-1]["lr"] < 0.2 * lr0                                      # and at the end, at the floor
    assert ck["wall_time_s"] <= budget + 1                                 # within the budget


def test_the_budget_counts_data_preparation(tmp_path, monkeypatch):
    _, full = _budget_run(tmp_path, monkeypatch, "a")

    def slow_prepare(cfg, run_dir, *, resume):
        time.perf_counter.t += 0.2 * 60 * 0.75   # three quarters of the budget go on preparing the data
        return kinds.prepare(cfg, run_dir, resume=resume)

    _, slow = _budget_run(tmp_path, monkeypatch, "b", prepare=slow_prepare)
    assert slow["step"] < 0.4 * full["step"] and slow["wall_time_s"] <= 0.2 * 60 + 1


def test_plain_progress_lines_when_the_output_is_not_a_terminal():
    lines = []
    bar = TrainProgress(1000, 0, unit="img/s", log=lines.append, every_s=10, terminal=False)
    with bar:
        for step, t in ((10, 1.0), (20, 5.0), (30, 11.0), (40, 15.0), (50, 21.5)):
            bar.update(step, 0.5, 100.0, lr=1e-3, elapsed=t)
    assert len(lines) == 3 and lines[0].startswith("step 10/1,000 (1%), loss 0.5, 100 img/s, lr 0.001")
    assert lines[1].endswith(f"0:11 elapsed, {clock((1000 - 30) * 10 / 20)} left")
    budget = []
    with TrainProgress(10**9, 0, log=budget.append, every_s=10, terminal=False, budget_s=60) as bar:
        bar.update(5, 0.5, 100.0, elapsed=20.0)
    assert budget == ["step 5, loss 0.5, 100 img/s, 0:20 elapsed, 0:40 left of a 1:00 budget"]
    quiet = []
    with TrainProgress(100, 0, enabled=False, log=quiet.append, terminal=False) as bar:
        bar.update(5, 0.5, 100.0, elapsed=20.0)
    assert quiet == []
