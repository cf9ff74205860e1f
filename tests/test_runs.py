"""The run folder: journalled checkpoints, tamper detection, exact resume after SIGKILL, the NaN guard."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genlab
from conftest import needs_espeak
from genlab.api import build_config
from genlab.kinds import prepare
from genlab.models.autoencoder import VAE
from genlab.models.video_diffusion import VideoDDPM
from genlab.models.wavegan import WaveGAN
from genlab.runs import RunError, commit, load_weights, read_metrics, recover, sha256
from genlab.training.trainer import TrainingDiverged, fit
from resume_util import assert_same_training, check_exact_resume, record_batches

QUIET = ["train.sample_every=100000", "train.val_every=100000", "train.log_every=10"]
# A small labelled spoken-digits set (espeak-ng, cached after the first build), trained in bf16 with EMA
AUDIO = ["data.count=200", "data.conditional=true", "train.batch_size=8", "train.precision=bf16", "train.ema=0.9"]


def tiny_run(path, steps=30, extra=()):
    return genlab.train("vae", data="digits", out=path, preset="tiny", steps=steps,
                        overrides=QUIET + ["train.ckpt_every=10", *extra], progress=False, log=lambda s: None)


def _manifest(files):
    return json.dumps({"step": 1, "files": {k: sha256(v) for k, v in files.items()}}).encode()


def test_commit_is_all_or_nothing(tmp_path):
    old = {"model.safetensors": b"1", "state/trainer.json": b"1"}
    commit(tmp_path, {**old, "checkpoint.json": _manifest(old)})
    # a commit that died before its COMPLETE marker is discarded: the old files stay
    (tmp_path / ".pending").mkdir()
    (tmp_path / ".pending" / "model.safetensors").write_bytes(b"2")
    recover(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == b"1" and not (tmp_path / ".pending").exists()
    # a commit that died after COMPLETE but mid-rename is finished
    new = {"model.safetensors": b"2", "state/trainer.json": b"2"}
    (tmp_path / ".pending" / "state").mkdir(parents=True)
    (tmp_path / ".pending" / "state" / "trainer.json").write_bytes(b"2")
    (tmp_path / ".pending" / "checkpoint.json").write_bytes(_manifest(new))
    (tmp_path / ".pending" / "COMPLETE").write_text(json.dumps(sorted(new) + ["checkpoint.json"]))
    (tmp_path / "model.safetensors").write_bytes(b"2")  # model.safetensors had already been moved in
    recover(tmp_path)
    assert (tmp_path / "state" / "trainer.json").read_bytes() == b"2" and not (tmp_path / ".pending").exists()
    assert (tmp_path / "checkpoint.json").read_bytes() == _manifest(new)


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


def _train_cmd(out, steps, kill="none", n=0, record=os.devnull):
    """The CLI's `train` through tests/resume_util.py: SIGKILL at the kill point, record the batches used."""
    return [sys.executable, str(Path(__file__).with_name("resume_util.py")), kill, str(n), str(record),
            "train", "vae", "--data", "digits", "--preset", "tiny", "--steps", str(steps), "--out", str(out),
            "--no-progress", "--set", "train.ema=0.9", "--set", "train.ckpt_every=20",
            *sum((["--set", q] for q in QUIET), [])]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """SIGKILL a run at seeded random points (inside a step, halfway through writing the .pending journal,
    halfway through moving a committed checkpoint into place), resume it, and compare with an uninterrupted
    run: only the remaining steps run, the pre-kill metrics rows are kept byte for byte, and weights, EMA,
    optimizer state and every metrics row end bit-identical."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(genlab.__file__).parents[1])}
    steps = 120                          # checkpoints every 20 steps: 6 commits of >= 4 files each
    subprocess.run(_train_cmd(tmp_path / "straight", steps), env=env, check=True, capture_output=True)
    rng = random.Random(20240601)
    # n >= 5 writes or moves under .pending/ lands in the second commit or later, so a checkpoint exists
    kills = [("step", rng.randrange(21, steps - 1)), ("write", rng.randrange(5, 20)), ("move", rng.randrange(5, 16))]
    for kill, n in kills:
        killed = tmp_path / f"killed-{kill}"
        proc = subprocess.run(_train_cmd(killed, steps, kill, n), env=env, capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, f"never reached kill point {kill} {n}: {proc.stderr[-800:]}"
        assert kill == "step" or (killed / ".pending").exists(), "the kill did not land inside a commit"
        probe = tmp_path / f"probe-{kill}"              # what resume must find, recovered on a copy
        shutil.copytree(killed, probe)
        recover(probe)
        at = json.loads((probe / "checkpoint.json").read_text())["step"]
        lines = (killed / "metrics.jsonl").read_text().splitlines(keepends=True)
        kept = "".join(line for line in lines if json.loads(line).get("step", 0) <= at)
        record = tmp_path / f"batches-{kill}.json"
        subprocess.run(_train_cmd(killed, steps, record=record) + ["--resume", str(killed)], env=env, check=True,
                       capture_output=True)
        assert json.loads(record.read_text()) == list(range(at, steps)), f"{kill}: resume did not run steps {at}.."
        assert (killed / "metrics.jsonl").read_text().startswith(kept), f"{kill}: pre-kill metrics rows changed"
        assert_same_training(tmp_path / "straight", killed)


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


class ExplodingVideoDDPM(VideoDDPM):
    """A video-ddpm whose loss turns NaN at step 16 (counted by calls in training mode)."""

    calls = 0

    def loss(self, batch):
        out = super().loss(batch)
        if self.training:
            ExplodingVideoDDPM.calls += 1
            if ExplodingVideoDDPM.calls > 15:
                out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_in_a_video_ddpm_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = build_config("video-ddpm", data="moving-shapes", preset="tiny", steps=50,
                       overrides=QUIET + ["train.ckpt_every=10", "data.count=32", "data.frames=4", "data.image_size=16",
                                          "train.batch_size=4", "train.precision=bf16", "train.ema=0.9"])
    prep = prepare(cfg, tmp_path, resume=False)
    with pytest.raises(TrainingDiverged, match="became nan at step 16") as e:
        fit(cfg, ExplodingVideoDDPM(cfg.model), prep.make_loader, prep.val_batches, tmp_path, progress=False)
    assert "last good checkpoint" in str(e.value)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 10
    weights, ema = load_weights(tmp_path)
    assert ema and all(torch.isfinite(w).all() for w in [*weights.values(), *ema.values()] if w.is_floating_point())


class ExplodingWaveGAN(WaveGAN):
    """A WaveGAN whose discriminator's or generator's loss (`player`, "d" or "g") turns NaN at step 16 (counted
    by that player's loss calls in training mode; one of each per step with d_steps=1)."""

    player, calls = "d", 0

    def _explode(self, player: str, value: torch.Tensor) -> torch.Tensor:
        if self.training and player == self.player:
            ExplodingWaveGAN.calls += 1
            if ExplodingWaveGAN.calls > 15:
                return value * float("nan")
        return value

    def d_loss(self, real, fake):
        return self._explode("d", super().d_loss(real, fake))

    def g_loss(self, fake):
        return self._explode("g", super().g_loss(fake))


@needs_espeak
@pytest.mark.parametrize("player", ["d", "g"])
def test_nan_in_either_wavegan_players_loss_stops_and_keeps_the_last_good_checkpoint(player, tmp_path, monkeypatch):
    monkeypatch.setattr(ExplodingWaveGAN, "player", player)
    monkeypatch.setattr(ExplodingWaveGAN, "calls", 0)
    cfg = build_config("wavegan", data="spoken-digits", preset="tiny", steps=50,
                       overrides=QUIET + AUDIO + ["train.ckpt_every=10", "model.d_steps=1"])
    prep = prepare(cfg, tmp_path, resume=False)
    model = ExplodingWaveGAN(cfg.model)
    with pytest.raises(TrainingDiverged, match=f"the loss of group '{player}' became nan at step 16") as e:
        fit(cfg, model, prep.make_loader, prep.val_batches, tmp_path, progress=False)
    assert "last good checkpoint" in str(e.value)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 10
    assert read_metrics(tmp_path)[-1] == {"step": 16, "diverged": player}
    weights, _ = load_weights(tmp_path)        # verified against its recorded hash
    assert {k.split(".")[0] for k in weights} >= {"generator", "discriminator"}
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_resume_can_extend_training_but_not_change_the_model(tmp_path, monkeypatch):
    run = tiny_run(tmp_path / "run", steps=20)
    with pytest.raises(ValueError, match="only train"):
        genlab.train("vae", resume=run.path, overrides=["model.width=64"], progress=False)
    before = (run.path / "metrics.jsonl").read_text()
    seen = []
    record_batches(seen, monkeypatch.setattr)
    more = genlab.train("vae", resume=run.path, steps=30, progress=False, log=lambda s: None)
    assert more.result.step == 30 and seen == list(range(20, 30)), "resume did not run exactly steps 20..29"
    assert json.loads((run.path / "checkpoint.json").read_text())["step"] == 30
    assert (run.path / "metrics.jsonl").read_text().startswith(before)
    counts = {k: v for k, v in load_file(run.path / "state" / "optimizer.safetensors").items() if k.endswith("/step")}
    assert counts and all(int(v) == 30 for v in counts.values()), "the optimizer state did not continue from step 20"


@pytest.mark.parametrize("family, data, extra", [
    ("gpt", "pycode", ["model.block_size=32", "train.precision=bf16", "train.ema=0.9"]),
    ("seq2seq", "dates-en-de", ["data.count=300", "train.accum_steps=2"]),
    ("gan", "digits", ["train.ema=0.9"]),
    pytest.param("wavegan", "spoken-digits", AUDIO + ["data.time_shift=0.1", "data.gain_db=3"], marks=needs_espeak),
    pytest.param("audio-ddpm", "spoken-digits", AUDIO, marks=needs_espeak),
    ("video-ddpm", "moving-shapes", ["data.count=64", "data.frames=6", "data.image_size=16", "data.crop_frames=2",
                                     "data.flip=true", "data.conditional=true", "train.batch_size=4",
                                     "train.precision=bf16", "train.ema=0.9"]),
    ("pix2pix", "edges2shapes", ["data.count=64", "data.image_size=16", "data.flip=true", "train.batch_size=8",
                                 "train.precision=bf16", "train.ema=0.9"]),
    # the autoencoder freezes after step 15, between the copied checkpoint and the end: the stage resumes too;
    # or after step 5, before the checkpoint: the resumed run trains the U-Net alone and logs as the original
    *[("ldm", "shapes", ["data.count=64", "data.image_size=16", "data.conditional=true", "train.batch_size=8",
                         f"model.ae_steps={n}", "model.timesteps=50", "train.ema=0.9"]) for n in (15, 5)],
])
def test_resume_is_exact_for_other_families(family, data, extra, tmp_path, monkeypatch):
    """Copy the run folder when the step-10 checkpoint lands, resume the copy, compare with the original:
    only steps 10..19 run again, and weights, EMA, optimizer state and metrics rows end bit-identical."""
    check_exact_resume(family, data, QUIET + ["train.ckpt_every=10", *extra], tmp_path, monkeypatch)
