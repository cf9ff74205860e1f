"""A run folder is untrusted input: crafted journals, symlinks, swapped or malformed files, concurrent
writers, failed resumes and torn metrics must neither write outside it nor change it, nor give a traceback."""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genlab
from genlab.api import load_config
from genlab.cli import main
from genlab.errors import ConfigError, RunError
from genlab.evaluation.judged import needs_training
from genlab.runs import has_checkpoint, load_checkpoint, read_metrics, recover, sha256

QUIET = ["train.sample_every=100000", "train.val_every=100000", "train.log_every=5", "train.ckpt_every=10"]


def quiet(s):
    return None


def train(family, out, data="digits", steps=10, extra=(), **kw):
    return genlab.train(family, data=data, out=out, preset="tiny", steps=steps, overrides=QUIET + list(extra),
                        progress=False, log=quiet, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    train("vae", root / "vae")
    train("gpt", root / "gpt", data="pycode", extra=["model.block_size=32"])
    return root


def copy(trained, family, dest):
    shutil.copytree(trained / family, dest, symlinks=True)
    return dest


def tree(root):
    """Every path under root -> its content hash (a symlink -> its target), never following links."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(d, name)
            out[str(p.relative_to(root))] = (f"-> {os.readlink(p)}" if p.is_symlink()
                                             else sha256(p.read_bytes()) if p.is_file() else "dir")
    return out


def edit_json(run, rel, change):
    """Apply change(doc) -> doc to run/rel and record the new hash in checkpoint.json (as a tamperer would)."""
    path = run / rel
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    if rel != "checkpoint.json":
        ck = json.loads((run / "checkpoint.json").read_text())
        ck["files"][rel] = sha256(path.read_bytes())
        (run / "checkpoint.json").write_text(json.dumps(ck))


def old_format(run):
    """Make the manifest look like one written before format 2: no "format", no config/tokenizer hashes."""
    ck = json.loads((run / "checkpoint.json").read_text())
    del ck["format"]
    ck["files"] = {k: v for k, v in ck["files"].items() if k not in ("config.json", "tokenizer.json")}
    (run / "checkpoint.json").write_text(json.dumps(ck))


# ---- 1. the journal and symlinks -----------------------------------------------------------------


@pytest.mark.parametrize("listed", [["../../outside.pth"], ["state/optimizer.safetensors"], ["/tmp/x.pth"]])
def test_a_crafted_journal_is_not_rolled_forward_and_a_load_changes_nothing(trained, tmp_path, listed):
    run = copy(trained, "vae", tmp_path / "box" / "run")
    (tmp_path / "box" / "outside.pth").write_bytes(b"payload")        # what ../../outside.pth reads from .pending
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "optimizer.safetensors").write_bytes(b"theirs")
    (run / ".pending").mkdir()
    (run / ".pending" / "state").symlink_to(elsewhere, target_is_directory=True)
    (run / ".pending" / "COMPLETE").write_text(json.dumps(listed))
    before, everything = tree(run), tree(tmp_path)
    genlab.sample(genlab.load(run), 2)                               # a reader ignores .pending
    load_config(run)
    assert tree(run) == before
    with pytest.raises(RunError, match="Refusing to roll it forward|symbolic link"):
        genlab.train("vae", resume=run, steps=12, progress=False, log=quiet)
    assert tree(tmp_path) == everything and not (tmp_path / "outside.pth").exists()


def test_a_pending_file_that_does_not_match_its_manifest_is_not_moved_in(trained, tmp_path):
    run = copy(trained, "vae", tmp_path / "run")
    before = (run / "model.safetensors").read_bytes()
    (run / ".pending").mkdir()
    (run / ".pending" / "model.safetensors").write_bytes(b"not the weights")
    shutil.copy(run / "checkpoint.json", run / ".pending" / "checkpoint.json")
    (run / ".pending" / "COMPLETE").write_text(json.dumps(["checkpoint.json", "model.safetensors"]))
    with pytest.raises(RunError, match="does not match the SHA-256"):
        recover(run)
    assert (run / "model.safetensors").read_bytes() == before


def test_a_reader_leaves_a_genuine_pending_commit_to_the_writer(trained, tmp_path):
    run = copy(trained, "vae", tmp_path / "run")
    (run / ".pending" / "state").mkdir(parents=True)
    names = ["checkpoint.json", "model.safetensors", "state/optimizer.safetensors", "state/trainer.json"]
    for rel in names:
        shutil.copy(run / rel, run / ".pending" / rel)
    (run / ".pending" / "COMPLETE").write_text(json.dumps(names))
    before = tree(run)
    genlab.load(run)
    assert tree(run) == before
    assert genlab.train("vae", resume=run, steps=12, progress=False, log=quiet).result.step == 12
    assert not (run / ".pending").exists()


@pytest.mark.parametrize("rel", ["model.safetensors", "config.json", "state"])
def test_no_reader_follows_a_symlink_out_of_the_run(trained, tmp_path, rel):
    run = copy(trained, "vae", tmp_path / "run")
    outside = tmp_path / "outside"
    shutil.move(run / rel, outside)
    (run / rel).symlink_to(outside, target_is_directory=outside.is_dir())
    with pytest.raises(RunError, match="symbolic link"):
        genlab.load(run) if rel != "state" else load_checkpoint(run)


# ---- 2. tokenizer.json ---------------------------------------------------------------------------


def test_a_swapped_tokenizer_is_refused(trained, tmp_path):
    run = copy(trained, "gpt", tmp_path / "run")
    tok = json.loads((run / "tokenizer.json").read_text())
    tok["chars"] = tok["chars"][::-1]                                # same size, different ids
    (run / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(RunError, match="tokenizer.json does not match the SHA-256"):
        genlab.load(run)


def test_a_run_of_the_previous_format_loads_and_its_tokenizer_size_is_checked(trained, tmp_path):
    run = copy(trained, "gpt", tmp_path / "run")
    old_format(run)
    assert genlab.load(run).run.tokenizer.vocab_size == load_config(run).model.vocab_size
    tok = json.loads((run / "tokenizer.json").read_text())
    tok["chars"] = tok["chars"][:-3]
    (run / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(RunError, match="tokenizer.json has .* tokens but config.json's model.vocab_size is"):
        genlab.load(run)
    (run / "tokenizer.json").write_text("{not json")
    with pytest.raises(RunError, match="tokenizer.json is not a genlab tokenizer"):
        genlab.load(run)


def test_a_malformed_tokenizer_gives_a_run_error(trained, tmp_path):
    run = copy(trained, "gpt", tmp_path / "run")
    edit_json(run, "tokenizer.json", lambda d: {"type": "char"})
    with pytest.raises(RunError, match="tokenizer.json is not a genlab tokenizer"):
        genlab.load(run)


def test_a_run_of_the_previous_format_still_loads_and_resumes(trained, tmp_path):
    run = copy(trained, "vae", tmp_path / "run")
    old_format(run)
    genlab.sample(genlab.load(run), 2)
    assert genlab.train("vae", resume=run, steps=12, progress=False, log=quiet).result.step == 12
    assert json.loads((run / "checkpoint.json").read_text())["format"] == 2


# ---- 3. one writer at a time ---------------------------------------------------------------------


def test_a_second_writer_gets_the_holders_pid_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom genlab.runs import write_lock\n"
         f"with write_lock({str(out)!r}):\n    print('locked', flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(genlab.__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "locked"
        (out / "config.json").write_text("the winner's")
        with pytest.raises(RunError, match=f"being written by another genlab process \\(PID {holder.pid}"):
            train("vae", out)
        assert (out / "config.json").read_text() == "the winner's" and not (out / ".pending").exists()
    finally:
        holder.communicate("")
    (out / "config.json").unlink()
    assert not has_checkpoint(out)                       # the lock file alone does not make a run
    assert train("vae", out).result.step == 10


def test_a_judge_another_process_is_training_is_waited_for_not_trained_twice(tmp_path):
    """Two evaluations of one new dataset at once: the second waits for the first's judge instead of failing on
    its lock (or training a second one), then uses it."""
    path = tmp_path / "judges" / "key-classifier"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib\nfrom genlab.runs import write_lock\n"
         f"with write_lock({str(path)!r}):\n    print('locked', flush=True)\n    sys.stdin.readline()\n"
         f"    pathlib.Path({str(path / 'checkpoint.json')!r}).write_text('{{}}')"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(genlab.__file__).parents[1])})
    said = []
    try:
        assert holder.stdout.readline().strip() == "locked"
        threading.Timer(0.5, lambda: (holder.stdin.write("done\n"), holder.stdin.flush())).start()
        assert needs_training(path, said.append) is False   # returned once the holder wrote its judge
    finally:
        holder.communicate("")
    assert len(said) == 1 and f"another genlab process (PID {holder.pid}) is writing {path}" in said[0]
    assert needs_training(tmp_path / "judges" / "other", said.append) is True and len(said) == 1  # no writer


# ---- 4. a failed resume changes nothing ----------------------------------------------------------


def _class_folder(root, name, n=16, seed=0):
    rng = np.random.default_rng(seed)
    (root / name).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / name / f"{i}.png")


def test_a_resume_that_does_not_fit_leaves_the_run_as_it_was(tmp_path):
    data = tmp_path / "data"
    for k, name in enumerate(["a", "b"]):
        _class_folder(data, name, seed=k)
    run = train("vae", tmp_path / "run", data=str(data), extra=["train.batch_size=8"], conditional=True).path
    _class_folder(data, "c", seed=2)                     # the data gained a class since
    before = tree(run)
    with pytest.raises(RunError, match="does not fit the model"):
        genlab.train("vae", resume=run, steps=20, progress=False, log=quiet)
    assert tree(run) == before
    assert genlab.sample(run, 2, cond=1).shape[0] == 2


# ---- 5. conflicting flags on --resume ------------------------------------------------------------


@pytest.mark.parametrize("family, kw, msg", [
    ("vae", {"seed": 5}, "--seed 5: the run has train.seed=0"),
    ("vae", {"data": "shapes"}, "--data shapes: the run has data.name=digits"),
    ("vae", {"image_size": 16}, "--image-size 16: the run has data.image_size=0"),
    ("gan", {}, "family gan: the run has family=vae"),
])
def test_resume_refuses_a_conflicting_flag(trained, tmp_path, family, kw, msg):
    run = copy(trained, "vae", tmp_path / "run")
    before = tree(run)
    with pytest.raises(ConfigError, match=msg):
        genlab.train(family, resume=run, progress=False, log=quiet, **kw)
    assert tree(run) == before


def test_resume_takes_the_runs_own_values_and_the_cli_names_a_conflict(trained, tmp_path, capsys):
    run = copy(trained, "vae", tmp_path / "run")
    assert main(["train", "vae", "--resume", str(run), "--seed", "3", "--no-progress"]) == 1
    assert "--seed 3: the run has train.seed=0" in capsys.readouterr().err
    assert main(["train", "vae", "--resume", str(run), "--data", "digits", "--seed", "0", "--steps", "12",
                 "--no-progress"]) == 0


# ---- 6. metrics.jsonl ----------------------------------------------------------------------------


def test_a_torn_metrics_tail_is_skipped_by_readers_and_dropped_on_resume(trained, tmp_path):
    run = copy(trained, "vae", tmp_path / "run")
    rows = read_metrics(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "train/lo')                # a write cut short
    with pytest.warns(RuntimeWarning, match=f"metrics.jsonl, line {len(rows) + 1}: skipped a torn last line"):
        assert read_metrics(run) == rows
    with pytest.warns(RuntimeWarning):
        genlab.train("vae", resume=run, steps=12, progress=False, log=quiet)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines) and json.loads(lines[-1])["step"] == 12


def test_a_corrupt_metrics_line_before_the_tail_names_the_file_and_line(trained, tmp_path):
    run = copy(trained, "vae", tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "\x00\x00garbage", *lines[1:]]) + "\n")
    with pytest.raises(RunError, match="metrics.jsonl, line 2: "):
        read_metrics(run)


# ---- 7. malformed config.json and checkpoint.json ------------------------------------------------


def _without(key):
    return lambda d: {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("change, error, msg", [
    (lambda d: [d], RunError, "config.json holds a JSON list"),
    (_without("model"), RunError, 'config.json: "model" is None; expected an object'),
    (lambda d: {**d, "model": [1]}, RunError, 'config.json: "model" is \\[1\\]'),
    (lambda d: {**d, "family": 3}, RunError, 'config.json: "family" is 3'),
    (lambda d: {**d, "family": "nope"}, ConfigError, "config.json: unknown family 'nope'"),
    (lambda d: {**d, "model": {**d["model"], "latent_dim": "wide"}}, ConfigError, "config.json: .*latent_dim"),
    (lambda d: {**d, "dataset": ["a"]}, RunError, 'config.json: "dataset" is'),
])
def test_a_malformed_config_names_the_file_and_key(trained, tmp_path, change, error, msg):
    run = copy(trained, "vae", tmp_path / "run")
    edit_json(run, "config.json", change)
    for read in (genlab.load, load_config):
        with pytest.raises(error, match=msg):
            read(run)


@pytest.mark.parametrize("change, msg", [
    (lambda d: [d], "checkpoint.json holds a JSON list"),
    (lambda d: {**d, "files": list(d["files"])}, 'checkpoint.json: "files" is \\['),
    (lambda d: {**d, "files": {**d["files"], "model.safetensors": 5}}, 'checkpoint.json: "files" is'),
    (lambda d: {**d, "files": {**d["files"], "model.safetensors": "xyz"}}, 'checkpoint.json: "files" is'),
    (lambda d: {**d, "step": "ten"}, 'checkpoint.json: "step" is \'ten\''),
    (_without("files"), 'checkpoint.json: "files" is None'),
])
def test_a_malformed_checkpoint_manifest_names_the_file_and_key(trained, tmp_path, change, msg):
    run = copy(trained, "vae", tmp_path / "run")
    edit_json(run, "checkpoint.json", change)
    with pytest.raises(RunError, match=msg):
        genlab.load(run)
    with pytest.raises(RunError, match=msg):
        load_checkpoint(run)


def test_resuming_a_finished_run_changes_nothing(trained, tmp_path):
    run = copy(trained, "vae", tmp_path / "vae")
    before = {k: v for k, v in tree(run).items() if not k.endswith(".lock")}
    result = genlab.train("vae", resume=run, progress=False, log=quiet).result
    assert {k: v for k, v in tree(run).items() if not k.endswith(".lock")} == before
    assert result.step == 10 and "loss" in result.val
