"""Shared fixtures. Tests run single-threaded: two cores and several processes would oversubscribe."""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
