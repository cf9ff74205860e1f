"""Bad flags and settings: one line naming the flag, a non-zero exit, nothing written; a bug says it is one."""

import hashlib
import json
import math
import socket

import pytest
import torch
from PIL import Image

import genlab
from genlab import cli
from genlab.errors import ControlError, DataError, UsageError
from genlab.cli import main

QUIET = ["--no-progress", "--set", "train.sample_every=100000", "--set", "train.val_every=100000"]


def _argparse_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    (["sample", "RUN", "-n", "0"], "-n"),
    (["data", "show", "digits", "-n", "0"], "-n"),
    (["interpolate", "RUN", "--rows", "0"], "--rows"),
    (["interpolate", "RUN", "--frames", "-3"], "--frames"),
    (["eval", "RUN", "-n", "0"], "-n"),
    (["generate", "RUN", "-n", "0"], "-n"),
    (["train", "vae", "--minutes", "inf"], "--minutes"),
    (["train", "vae", "--minutes", "nan"], "--minutes"),
    (["train", "vae", "--steps", "0"], "--steps"),
    (["sample", "RUN", "--guidance", "nan"], "--guidance"),
    (["sample", "RUN", "--eta", "inf"], "--eta"),
    (["generate", "RUN", "--temperature", "nan"], "--temperature"),
    (["serve", "RUN", "--port", "99999"], "--port"),
])
def test_counts_and_reals_are_checked_at_the_flag(argv, flag, capsys):
    err = _argparse_error(argv, capsys)
    assert f"argument {flag}" in err and ("at least 1" in err or "finite" in err or "0..65535" in err), err


@pytest.mark.parametrize("override, key", [
    ("train.minutes=inf", "train.minutes"), ("train.lr=nan", "train.lr"), ("model.obs_sigma=0", "model.obs_sigma"),
    ("model.obs_sigma=-1", "model.obs_sigma"), ("model.beta=-0.5", "model.beta"), ("data.val_fraction=nan", "data.val_fraction"),
])
def test_bad_settings_fail_before_anything_is_written(override, key, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "vae", "--steps", "2", "--set", override, "--out", str(out), *QUIET]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab train: error:") and key in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_non_finite_controls_are_refused_by_the_model_too(tmp_path):
    run = genlab.train("ddpm", data="digits", out=tmp_path / "ddpm", preset="tiny", steps=2, conditional=True,
                       progress=False, overrides=["train.sample_every=100000", "train.val_every=100000"],
                       log=lambda *a, **k: None)
    model = genlab.load(run.path)
    for control in ({"guidance": math.nan}, {"guidance": math.inf}, {"eta": math.nan}):
        with pytest.raises(ControlError, match=next(iter(control))) as e:
            model.sample(2, cond=3, generator=torch.Generator().manual_seed(0), **control)
        assert e.value.field == next(iter(control))
    with pytest.raises(UsageError, match="rows"):
        genlab.api.interpolate(genlab.train("vae", data="digits", out=tmp_path / "vae", preset="tiny", steps=2,
                                            progress=False, log=lambda *a, **k: None,
                                            overrides=["train.sample_every=100000", "train.val_every=100000"]).path,
                               rows=0)


def test_expected_failures_are_one_line_and_bugs_say_they_are_bugs(monkeypatch, capsys):
    def expected(args):
        raise DataError("images.npz: labels must be integers in 0..9; found -1")

    def bug(args):
        return {}["missing"]

    monkeypatch.setitem(cli.COMMANDS, "report", expected)
    assert main(["report", "x"]) == 1
    err = capsys.readouterr().err
    assert err == "genlab report: error: images.npz: labels must be integers in 0..9; found -1\n"
    monkeypatch.setitem(cli.COMMANDS, "report", bug)
    assert main(["report", "x"]) == 2
    err = capsys.readouterr().err
    assert "internal error (a bug in genlab" in err and "KeyError" in err and "test_cli_errors.py" in err
    assert "GENLAB_DEBUG=1" in err
    monkeypatch.setenv("GENLAB_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["report", "x"])


def test_a_missing_file_names_it(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and len(err.strip().splitlines()) == 1


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, capsys):
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, i, i)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    assert main(["train", "vae", "--data", str(tmp_path / "imgs"), "--steps", "2", "--out", str(out), *QUIET]) == 1
    assert "batch" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()  # a folder the user made stays, with nothing of ours left in it but the lock file
    assert main(["train", "vae", "--data", str(tmp_path / "imgs"), "--steps", "2", "--out", str(out), *QUIET]) == 1
    assert out.is_dir() and {p.name for p in out.iterdir()} == {".lock"}


def test_out_of_memory_is_a_clear_error_and_a_huge_n_is_refused_before_drawing(tmp_path, monkeypatch, capsys):
    run = genlab.train("vae", data="digits", out=tmp_path / "vae", preset="tiny", steps=2, progress=False,
                       log=lambda *a, **k: None, overrides=["train.sample_every=100000", "train.val_every=100000"])
    assert main(["sample", str(run.path), "-n", "100000000", "--out", str(tmp_path / "x.npz")]) == 1
    err = capsys.readouterr().err
    assert "-n 100000000" in err and "expected -n at most" in err and not (tmp_path / "x.npz").exists()

    def allocation_fails(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 25600000000 bytes.")

    monkeypatch.setitem(cli.COMMANDS, "report", allocation_fails)
    assert main(["report", "x"]) == 1
    assert capsys.readouterr().err.startswith("genlab report: error: out of memory; use fewer samples (-n)")


def _tiny(family, data, tmp_path, **kw):
    return genlab.train(family, data=data, out=tmp_path / family, preset="tiny", steps=2, progress=False,
                        log=lambda *a, **k: None, overrides=["train.sample_every=100000", "train.val_every=100000",
                                                             *kw.pop("overrides", [])], **kw).path


def test_a_command_given_a_run_of_the_wrong_kind_says_which_runs_it_needs(tmp_path, capsys):
    gpt = _tiny("gpt", "pycode", tmp_path, overrides=["model.block_size=16"])
    vae = _tiny("vae", "digits", tmp_path)
    for argv, needs in ((["sample", str(gpt), "-n", "2", "--out", str(tmp_path / "s.png")], "ddpm"),
                        (["translate", str(gpt), "hello"], "seq2seq"),
                        (["classify", str(gpt), "hello"], "textclf"),
                        (["generate", str(vae)], "gpt or lstm")):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith(f"genlab {argv[0]}: error:") and needs in err and len(err.splitlines()) == 1, err


def _rewrite(run, name: str, data: bytes) -> None:
    """Replace one of the run's files and re-vouch for it in checkpoint.json: a consistent but bad run, as
    someone could share."""
    (run / name).write_bytes(data)
    manifest = json.loads((run / "checkpoint.json").read_text())
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    (run / "checkpoint.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("key, value", [("latent_dim", -8), ("width", 0)])
def test_a_config_that_cannot_build_its_model_is_a_clear_error(key, value, tmp_path, capsys):
    run = _tiny("vae", "digits", tmp_path)
    doc = json.loads((run / "config.json").read_text())
    doc["model"][key] = value
    _rewrite(run, "config.json", json.dumps(doc).encode())
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "s.png")]) == 1
    err = capsys.readouterr().err
    assert key in err and "config.json" in err and len(err.splitlines()) == 1, err
    assert main(["train", "vae", "--steps", "2", "--set", f"model.{key}={value}", "--out", str(tmp_path / "new"),
                 *QUIET]) == 1
    assert "model.* settings" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_a_deeply_nested_config_is_a_clear_error(tmp_path, capsys):
    run = _tiny("vae", "digits", tmp_path)
    _rewrite(run, "config.json", ("[" * 100000 + "]" * 100000).encode())
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "s.png")]) == 1
    err = capsys.readouterr().err
    assert "config.json is not valid JSON" in err and "internal error" not in err, err


def test_serve_refuses_an_address_it_cannot_listen_on_before_loading(tmp_path, capsys):
    run = _tiny("vae", "digits", tmp_path)
    assert main(["serve", str(run), "--host", "256.1.1.1"]) == 1
    assert "--host 256.1.1.1" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(run), "--port", str(port)]) == 1
        assert f"--port {port}: cannot listen there" in capsys.readouterr().err


def test_outputs_never_overwrite_a_runs_own_files_and_seeds_are_in_range(tmp_path, capsys):
    run = _tiny("vae", "digits", tmp_path)
    before = (run / "model.safetensors").read_bytes()
    for target in ("model.safetensors", "config.json", "state/trainer.json", "metrics.jsonl"):
        err = _argparse_error(["sample", str(run), "-n", "2", "--out", str(run / target)], capsys)
        assert "part of the run" in err, err
    assert (run / "model.safetensors").read_bytes() == before
    assert main(["sample", str(run), "-n", "2", "--out", str(run / "samples" / "mine.png")]) == 0  # its own outputs
    for bad in ("-1", str(2**70)):
        assert "a seed in 0..2^63-1" in _argparse_error(["sample", str(run), "--seed", bad], capsys)


def test_a_label_for_an_unconditional_walk_and_weights_of_another_model_are_clear_errors(tmp_path, capsys):
    vae = _tiny("vae", "digits", tmp_path)
    assert main(["interpolate", str(vae), "--label", "3", "--out", str(tmp_path / "i.png")]) == 1
    assert "trained without labels" in capsys.readouterr().err
    gpt = _tiny("gpt", "pycode", tmp_path, overrides=["model.block_size=16"])
    _rewrite(vae, "model.safetensors", (gpt / "model.safetensors").read_bytes())
    assert main(["sample", str(vae), "-n", "2", "--out", str(tmp_path / "s.png")]) == 1
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "problem(s); first:" in err and len(err.splitlines()) == 1, err
