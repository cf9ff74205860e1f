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
