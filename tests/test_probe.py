"""scripts/probe.py: how it classifies outcomes, what it counts as data lost, and a tiny fuzz run end to end."""

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "probe.py"
spec = importlib.util.spec_from_file_location("probe", SCRIPT)
probe = sys.modules["probe"] = importlib.util.module_from_spec(spec)  # dataclasses look the module up
spec.loader.exec_module(probe)


def result(rc, err, hang=False):
    return {"rc": rc, "err": err, "hang": hang}


@pytest.mark.parametrize("res, allow_ok, expected", [
    (result(1, "loading...\ngenlab sample: error: x.npz: labels must be integers\n"), False, "clear"),
    (result(2, "usage: genlab sample [-h] run\ngenlab sample: error: argument -n: 0; expected at least 1\n"), False,
     "clear"),
    (result(1, 'Traceback (most recent call last):\n  File "x.py"\nKeyError: 1\n'), False, "bug"),
    (result(2, "genlab sample: internal error (a bug in genlab 0.1): KeyError: 'x'\n  at a.py:1; please report\n"),
     False, "bug"),
    (result(-9, ""), False, "bug"),                              # killed by a signal (e.g. the memory cap)
    (result(3, "genlab sample: error: x\n"), False, "bug"),      # an exit status nobody documents
    (result(1, "genlab sample: error: first\nsecond line\n"), False, "unclear"),
    (result(1, ""), False, "unclear"),
    (result(0, ""), False, "accepted"),
    (result(0, ""), True, "ok"),
    (result(None, "", hang=True), False, "hang"),
])
def test_outcomes_are_classified_from_exit_status_and_stderr(res, allow_ok, expected):
    assert probe.verdict(res, allow_ok) == expected


def test_changed_run_files_and_escapes_are_counted_but_the_lock_is_not(tmp_path):
    run = tmp_path / "vae"
    (run / "state").mkdir(parents=True)
    for rel in ("model.safetensors", "config.json", ".lock", "state/trainer.json"):
        (run / rel).write_text(rel)
    (tmp_path / "outside.txt").write_text("mine")
    before = probe.snapshot(tmp_path)
    assert probe.diff(before, probe.snapshot(tmp_path), ("vae",)) == {"lost": [], "new": [], "outside": []}
    (run / ".lock").write_text("12345")
    (run / "state/trainer.json").write_text("{}")
    (run / "config.json").unlink()
    (tmp_path / "escape.pth").write_text("escaped")
    (tmp_path / "outside.txt").write_text("overwritten")
    changes = probe.diff(before, probe.snapshot(tmp_path), ("vae",))
    assert changes["lost"] == ["vae/config.json", "vae/state/trainer.json"]
    assert changes["outside"] == ["outside.txt", "escape.pth"]


def test_a_symbolic_link_is_recorded_by_its_target_and_never_followed(tmp_path):
    (tmp_path / "target").write_text("a")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    before = probe.snapshot(tmp_path)
    (tmp_path / "target").write_text("b")   # the link's entry stays; only the target's changes
    after = probe.snapshot(tmp_path)
    assert before["link"] == after["link"] == f"link:{tmp_path / 'target'}"
    assert before["target"] != after["target"]


def test_mutations_are_seeded_and_change_the_file():
    suffix, data = probe.fuzz_bases()[1]
    first = probe.mutate(data, suffix, random.Random(7))
    assert first == probe.mutate(data, suffix, random.Random(7))
    assert sum(probe.mutate(data, suffix, random.Random(i))[0] != data for i in range(20)) >= 18


def test_quick_fuzz_run_writes_counts_that_add_up(tmp_path):
    out = tmp_path / "probe.json"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--only", "fuzz", "--workdir", str(tmp_path / "w"),
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    fuzz = json.loads(out.read_text())["results"]["fuzz"]
    assert "error" not in fuzz, fuzz
    parts = [v for k, v in fuzz.items() if k not in ("tried", "failures")]
    assert fuzz["tried"] == 30 and sum(parts) == 30, fuzz


def test_weight_diff_names_the_tensors_that_differ_bit_for_bit(tmp_path):
    from safetensors.numpy import save_file

    weights = {"a": np.zeros(3, np.float32), "b": np.ones(2, np.float32)}
    for name, w in (("x", weights), ("y", weights), ("z", {**weights, "b": np.array([1, 1 + 2**-20], np.float32)})):
        (tmp_path / name).mkdir()
        save_file(w, tmp_path / name / "model.safetensors")
    assert probe.weight_diff(tmp_path / "x", tmp_path / "y") == []
    assert [d.split(":")[0] for d in probe.weight_diff(tmp_path / "x", tmp_path / "z")] == ["b"]
