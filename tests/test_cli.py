"""The `genlab` command end to end on tiny configs, and its one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main

QUIET = ["--set", "train.sample_every=100000", "--set", "train.val_every=100000", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny conditional VAE and a tiny classifier (used as the judge), trained once for this module."""
    root = tmp_path_factory.mktemp("cli")
    assert main(["train", "vae", "--data", "digits", "--preset", "tiny", "--steps", "40", "--conditional",
                 "--set", "model.latent_dim=6", "--set", "train.lr=2e-3", "--out", str(root / "vae"), *QUIET]) == 0
    assert main(["train", "classifier", "--data", "digits", "--preset", "tiny", "--steps", "40",
                 "--out", str(root / "judge"), *QUIET]) == 0
    return root


def test_train_writes_a_self_describing_run(runs):
    cfg = json.loads((runs / "vae" / "config.json").read_text())
    assert cfg["family"] == "vae" and cfg["model"]["latent_dim"] == 6 and cfg["train"]["lr"] == 2e-3
    assert cfg["model"]["num_classes"] == 10 and cfg["dataset"]["classes"][3] == "3"
    assert json.loads((runs / "vae" / "checkpoint.json").read_text())["step"] == 40
    assert (runs / "vae" / "samples").is_dir() and any((runs / "vae" / "tb").iterdir())


def test_sample_png_grid_and_npz_with_a_label(runs, tmp_path):
    assert main(["sample", str(runs / "vae"), "-n", "16", "--seed", "0", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").text["Comment"].startswith("AI-generated image")
    assert main(["sample", str(runs / "vae"), "-n", "30", "--label", "3", "--out", str(tmp_path / "t.npz")]) == 0
    with np.load(tmp_path / "t.npz") as z:
        assert z["images"].shape == (30, 8, 8, 1) and (z["labels"] == 3).all()
    assert main(["sample", str(runs / "vae"), "-n", "30", "--label", "3", "--out", str(tmp_path / "u.npz")]) == 0
    with np.load(tmp_path / "t.npz") as a, np.load(tmp_path / "u.npz") as b:
        assert np.array_equal(a["images"], b["images"])      # same seed, same samples


def test_reconstruct_and_interpolate_write_grids(runs, tmp_path):
    assert main(["reconstruct", str(runs / "vae"), "--out", str(tmp_path / "r.png")]) == 0
    assert main(["interpolate", str(runs / "vae"), "--frames", "5", "--rows", "2", "--label", "1",
                 "--out", str(tmp_path / "i.png")]) == 0
    assert Image.open(tmp_path / "r.png").size[0] > 64 and Image.open(tmp_path / "i.png").size[0] > 64


def test_eval_compare_and_report(runs, tmp_path, capsys):
    assert main(["eval", str(runs / "vae"), "-n", "200", "--judge", str(runs / "judge"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "conditional_accuracy" in out and "fid" in out
    ev = json.loads((runs / "vae" / "eval.json").read_text())
    assert ev["n_samples"] == 200 and ev["judge"]["kind"] == "classifier"
    assert main(["compare", str(runs / "vae"), str(runs / "judge"), "--format", "csv",
                 "--out", str(tmp_path / "c.csv")]) == 0
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert lines[0].startswith("run,family,data,steps") and "fid" in lines[0] and len(lines) == 3
    assert main(["report", str(runs / "vae")]) == 0
    page = (runs / "vae" / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 3 and "conditional_accuracy" in page


@pytest.mark.parametrize("argv, words", [
    (["train", "vae", "--set", "model.nope=1"], "valid keys"),
    (["train", "vae", "--data", "/no/such/folder"], "digits"),
    (["sample", "/no/such/run"], "not a folder"),
    (["train", "vae", "--set", "train.precision=fp8"], "fp32, bf16"),
])
def test_bad_input_is_a_one_line_error(argv, words, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x")] if argv[0] == "train" else argv) == 1
    err = capsys.readouterr().err.strip()
    assert words in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_label_out_of_range_is_a_clear_error(runs, capsys):
    assert main(["sample", str(runs / "vae"), "--label", "12", "--out", "x.png"]) == 1
    assert "0..9" in capsys.readouterr().err


def test_data_list_and_show(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    assert "shapes" in capsys.readouterr().out
    assert main(["data", "show", "shapes", "-n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").mode == "RGB"


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "genlab", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("genlab ")
