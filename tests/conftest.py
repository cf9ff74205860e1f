"""Shared fixtures. Tests run single-threaded: `make test` runs two pytest-xdist workers on two cores, and more
threads would oversubscribe them."""

import os
import shutil

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


# Optional tools a test module may need: "what" -> the variable that makes a missing one a failure
REQUIRE_ENV = {"browser": "GENLAB_REQUIRE_BROWSER", "onnx": "GENLAB_REQUIRE_ONNX", "espeak": "GENLAB_REQUIRE_ESPEAK"}


def required(what: str) -> bool:
    """In CI (CI=true, or the tool's GENLAB_REQUIRE_* = 1, which .ci/run sets) a missing tool fails the tests."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(REQUIRE_ENV[what]) == "1"


# the mark of a test that synthesises spoken digits (`from conftest import needs_espeak`)
needs_espeak = pytest.mark.needs("espeak", None if shutil.which("espeak-ng") else
                                 "espeak-ng is not installed (Debian: apt-get install espeak-ng)")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(what, missing): the module needs an optional tool; `missing` "
                                       "says why it is unavailable (None when it is there)")


def pytest_collection_modifyitems(config, items):
    """Test files that hold a slow-marked test run first (otherwise in their usual order). `make test` runs two
    pytest-xdist workers a file at a time; the README test alone takes minutes, and started last it would leave
    one worker idle while it ran."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Skip (or, in CI, fail) a test whose tool is missing before any of its fixtures is built, so a
    missing browser costs no trained runs and never passes silently in CI."""
    for mark in item.iter_markers("needs"):
        what, missing = mark.args
        if missing and required(what):
            pytest.fail(f"{REQUIRE_ENV[what]}=1 or CI=true, but {missing}", pytrace=False)
        if missing:
            pytest.skip(missing)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets the session's private genlab cache (judges, fetched data), never ~/.cache."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path_factory.getbasetemp() / "genlab-cache"))


SERVE_PLAN = {  # family -> (data, overrides, train kwargs): tiny runs for the server and browser tests
    "ddpm": ("digits", [], {"conditional": True}),
    "vae": ("digits", [], {}),
    "gan": ("digits", [], {"conditional": True}),
    "gpt": ("pycode", ["model.block_size=32"], {}),
    "lstm": ("pycode", [], {}),
    "seq2seq": ("dates-en-de", ["data.count=400"], {}),
    "textclf": ("docstrings", [], {}),
}


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory):
    """One tiny run per servable family (20 steps each, about 30 s in all), trained once per session."""
    import genlab

    root = tmp_path_factory.mktemp("serve-runs")
    quiet = ["train.sample_every=100000", "train.val_every=100000"]
    for family, (data, extra, kwargs) in SERVE_PLAN.items():
        genlab.train(family, data=data, out=root / family, preset="tiny", steps=20, progress=False,
                     overrides=quiet + extra, log=lambda *a, **k: None, **kwargs)
    return {family: root / family for family in SERVE_PLAN}


@pytest.fixture(scope="session")
def music_run(tmp_path_factory):
    """A folder of 12 chorales written as MIDI files (and one file that is not MIDI, to be dropped), and a tiny
    gpt trained on it for 60 steps (a music run: the music kind claims the folder). About 15 s."""
    import genlab
    from genlab.data.music import bach_chorales
    from genlab.musicio import write_midi

    root = tmp_path_factory.mktemp("music")
    folder = root / "midi"
    folder.mkdir()
    for c in bach_chorales("none", cache_dir=root / "cache", limit=12):
        write_midi(folder / f"{c.id}.mid", c.text, {"source": "music21 corpus"})
    (folder / "notes.mid").write_text("not a MIDI file")
    genlab.train("gpt", data=str(folder), out=root / "gpt", preset="tiny", steps=60, progress=False,
                 overrides=["train.sample_every=60", "train.val_every=60", "data.val_fraction=0.2"],
                 log=lambda *a, **k: None)
    return root / "gpt", folder


VIDEO_DATA = ["data.count=120", "data.frames=8", "data.image_size=16"]   # moving-shapes, 8 frames of 16x16


@pytest.fixture(scope="session")
def video_run(tmp_path_factory):
    """A conditional video-ddpm on small moving shapes, trained for 4 steps with a preview (about 5 s); the
    properties its tests check need no quality."""
    import genlab

    root = tmp_path_factory.mktemp("video")
    genlab.train("video-ddpm", data="moving-shapes", out=root / "video-ddpm", preset="tiny", steps=4,
                 conditional=True, progress=False, log=lambda *a, **k: None,
                 overrides=VIDEO_DATA + ["train.batch_size=8", "train.sample_every=4", "train.val_every=4"])
    return root / "video-ddpm"


@pytest.fixture(scope="session")
def pair_run(tmp_path_factory):
    """A pix2pix on edges2digits at 16x16, trained for 60 steps (about 3 s); the properties its tests check need
    no quality."""
    import genlab

    out = tmp_path_factory.mktemp("pix2pix") / "pix2pix"
    genlab.train("pix2pix", "edges2digits", out=out, preset="tiny", steps=60, progress=False, log=lambda *a, **k: None,
                 overrides=["data.image_size=16", "train.batch_size=16", "train.val_every=30"])
    return out
