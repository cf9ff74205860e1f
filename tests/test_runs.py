"""The run folder: journalled checkpoints, tamper detection, exact resume after SIGKILL, the NaN guard."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genlab
from genlab.api import build_config
from genlab.prepare import prepare
from genlab.models.autoencoder import VAE
from genlab.runs import RunError, commit, load_weights, read_metrics, recover
from genlab.training.trainer import TrainingDiverged, fit

QUIET = ["train.sample_every=100000", "train.val_every=100000", "train.log_every=10"]


def tiny_run(path, steps=30, extra=()):
    return genlab.train("vae", data="digits", out=path, preset="tiny", steps=steps,
                        overrides=QUIET + ["train.ckpt_every=10", *extra], progress=False, log=lambda s: None)


def test_commit_is_all_or_nothing(tmp_path):
    commit(tmp_path, {"a.txt": b"1", "state/b.txt": b"1"})
    # a commit that died before its COMPLETE marker is discarded: the old files stay
    (tmp_path / ".pending").mkdir()
    (tmp_path / ".pending" / "a.txt").write_bytes(b"2")
    recover(tmp_path)
    assert (tmp_path / "a.txt").read_bytes() == b"1" and not (tmp_path / ".pending").exists()
    # a commit that died after COMPLETE but mid-rename is finished
    (tmp_path / ".pending" / "state").mkdir(parents=True)
    (tmp_path / ".pending" / "state" / "b.txt").write_bytes(b"2")
    (tmp_path / ".pending" / "COMPLETE").write_text(json.dumps(["a.txt", "state/b.txt"]))
    (tmp_path / "a.txt").write_bytes(b"2")  # a.txt had already been moved in
    recover(tmp_path)
    assert (tmp_path / "state" / "b.txt").read_bytes() == b"2" and not (tmp_path / ".pending").exists()


def test_tampered_and_truncated_weights_are_refused(tmp_path):
    run = tiny_run(tmp_path / "run", steps=10)
    weights = run.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF                       # flip bits inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(RunError, match="modified or truncated"):
        genlab.load(run.path)
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(RunError, match="modified or truncated"):
        genlab.load(run.path)


def test_a_trained_run_is_not_overwritten(tmp_path):
    run = tiny_run(tmp_path / "run", steps=10)
    before = (run.path / "model.safetensors").read_bytes()
    with pytest.raises(RunError, match="--resume"):
        tiny_run(run.path, steps=10)
    assert (run.path / "model.safetensors").read_bytes() == before


def _train_cmd(out, steps):
    return [sys.executable, "-m", "genlab", "train", "vae", "--data", "digits", "--preset", "tiny", "--steps",
            str(steps), "--out", str(out), "--no-progress", "--set", "train.ema=0.9", "--set", "train.ckpt_every=20",
            *sum((["--set", q] for q in QUIET), [])]


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(genlab.__file__).parents[1])}
    steps = 300
    subprocess.run(_train_cmd(tmp_path / "straight", steps), env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, steps), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        ck = killed / "checkpoint.json"
        if ck.exists() and json.loads(ck.read_text())["step"] >= 40:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = json.loads((killed / "checkpoint.json").read_text())["step"]
    assert 40 <= step_at_kill < steps, "the run finished before it could be killed; raise `steps`"

    subprocess.run(_train_cmd(killed, steps) + ["--resume", str(killed)], env=env, check=True, capture_output=True)
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("ema/") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    oa = load_file(tmp_path / "straight" / "state" / "optimizer.safetensors")
    ob = load_file(killed / "state" / "optimizer.safetensors")
    assert all(torch.equal(oa[k], ob[k]) for k in oa)
    logged = [r["step"] for r in read_metrics(killed) if "train/loss" in r]
    assert logged == sorted(set(logged)) and logged[-1] == steps   # no duplicated lines after resume


class ExplodingVAE(VAE):
    """A VAE whose loss turns NaN at step 15 (counted by calls in training mode)."""

    calls = 0

    def loss(self, batch):
        out = super().loss(batch)
        if self.training:
            ExplodingVAE.calls += 1
            if ExplodingVAE.calls > 15:
                out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = build_config("vae", preset="tiny", steps=50, overrides=QUIET + ["train.ckpt_every=10"])
    prep = prepare(cfg, tmp_path, resume=False)
    model = ExplodingVAE(cfg.model)
    with pytest.raises(TrainingDiverged, match="became nan at step 16") as e:
        fit(cfg, model, prep.make_loader, prep.val_batches, tmp_path, progress=False)
    assert "last good checkpoint" in str(e.value)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 10
    weights, _ = load_weights(tmp_path)        # verified against its recorded hash
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_resume_can_extend_training_but_not_change_the_model(tmp_path):
    run = tiny_run(tmp_path / "run", steps=20)
    with pytest.raises(ValueError, match="only train"):
        genlab.train("vae", resume=run.path, overrides=["model.width=64"], progress=False)
    more = genlab.train("vae", resume=run.path, steps=30, progress=False, log=lambda s: None)
    assert more.result.step == 30
    assert json.loads((run.path / "checkpoint.json").read_text())["step"] == 30


@pytest.mark.parametrize("family, data, extra", [
    ("gpt", "pycode", ["model.block_size=32", "train.precision=bf16", "train.ema=0.9"]),
    ("seq2seq", "dates-en-de", ["data.count=300", "train.accum_steps=2"]),
    ("gan", "digits", ["train.ema=0.9"]),
])
def test_resume_is_exact_for_other_families(family, data, extra, tmp_path, monkeypatch):
    """Copy the run folder when the step-10 checkpoint lands, resume the copy, compare with the original."""
    import shutil

    import genlab.training.trainer as trainer

    original = trainer.save_checkpoint

    def spy(run_dir, ck):
        original(run_dir, ck)
        if ck.step == 10 and run_dir == tmp_path / "a":
            shutil.copytree(run_dir, tmp_path / "b")

    monkeypatch.setattr(trainer, "save_checkpoint", spy)
    over = QUIET + ["train.ckpt_every=10", *extra]
    genlab.train(family, data=data, out=tmp_path / "a", preset="tiny", steps=20, overrides=over, progress=False)
    genlab.train(family, resume=tmp_path / "b", steps=20, progress=False, log=lambda s: None)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
