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


# ---- --minutes with no --preset: the family's budget rule chooses the model (gpt) ------------------------------

def _gpt_params(keys: dict) -> int:
    from genlab import registry
    from genlab.models.gpt import GPT

    cfg = registry.model_config("gpt", vocab_size=100)
    for key, value in keys.items():
        if key.startswith("model."):
            setattr(cfg, key.removeprefix("model."), value)
    return sum(p.numel() for p in GPT(cfg).parameters())


def test_minutes_without_a_preset_take_the_budget_rule_and_a_preset_or_set_still_wins():
    from genlab.api import build_config
    from genlab.models.gpt import BUDGET_RULE, PRESETS, budget_preset

    for upto, keys in BUDGET_RULE:
        minutes = min(upto, 1e4)
        cfg = build_config("gpt", data="pycode", minutes=minutes)
        for key, value in keys.items():
            section, name = key.split(".")
            assert getattr(getattr(cfg, section), name) == value, (minutes, key)
        assert cfg.train.minutes == minutes and cfg.train.steps >= 10**9
    short = budget_preset(BUDGET_RULE[0][0])
    small = build_config("gpt", data="pycode", minutes=BUDGET_RULE[0][0], preset="small")
    assert (small.model.n_layer, small.model.block_size, small.train.lr) == (
        PRESETS["small"]["model.n_layer"], PRESETS["small"]["model.block_size"], PRESETS["small"]["train.lr"])
    assert (short["model.n_layer"], short["model.block_size"], short["train.lr"]) != (
        small.model.n_layer, small.model.block_size, small.train.lr)            # the rule is not "small"
    told = build_config("gpt", data="pycode", minutes=BUDGET_RULE[0][0], overrides=["train.lr=1e-4"])
    assert told.train.lr == 1e-4 and told.model.n_layer == short["model.n_layer"]
    steps = build_config("gpt", data="pycode", steps=100)                       # no budget: "small"
    assert steps.model.block_size == PRESETS["small"]["model.block_size"]


def test_a_longer_budget_never_chooses_a_smaller_model():
    from genlab.models.gpt import BUDGET_RULE, budget_preset

    sizes = [_gpt_params(budget_preset(m)) for m in (0.5, 1.5, 3, 5, 10, 30, 60, 600)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert [upto for upto, _ in BUDGET_RULE] == sorted(upto for upto, _ in BUDGET_RULE)
    with pytest.raises(Exception, match="positive wall-clock budget"):
        budget_preset(0)


def test_the_rule_applies_only_where_it_can():
    from genlab.api import build_config
    from genlab.models.lstm import PRESETS as LSTM_PRESETS
    from genlab.training.run import budget_choice

    assert budget_choice("gpt", None, 2.0) is not None
    assert budget_choice("gpt", "tiny", 2.0) is None                            # a preset named
    assert budget_choice("gpt", None, None) is None and budget_choice("gpt", None, 0) is None
    assert budget_choice("gpt", None, 2.0, init_from="runs/base") is None       # the base fixes the architecture
    assert budget_choice("lstm", None, 2.0) is None                             # no rule: "small"
    assert build_config("lstm", data="pycode", minutes=2).model.d_model == LSTM_PRESETS["small"]["model.d_model"]


def test_training_says_what_the_rule_chose_and_records_it(tmp_path, monkeypatch):
    from genlab.models.gpt import budget_preset

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 400)
    monkeypatch.setattr(time, "perf_counter", FakeClock(tick=0.05))
    lines = []
    train("gpt", data=str(corpus), out=tmp_path / "r", minutes=0.05, progress=False, log=lines.append,
          prepare=kinds.prepare, overrides=["train.val_every=100000", "train.sample_every=100000"])
    chosen = budget_preset(0.05)
    said = [s for s in lines if s.startswith("no --preset: for 0.05 minutes the gpt budget rule chose")]
    assert len(said) == 1 and f"n_layer={chosen['model.n_layer']}" in said[0], lines
    cfg = load_config(tmp_path / "r")
    assert (cfg.model.n_layer, cfg.model.d_model, cfg.train.batch_size) == (
        chosen["model.n_layer"], chosen["model.d_model"], chosen["train.batch_size"])
