"""Run folders written by the previous version (genlab 0.1.0 before the kinds moved into genlab.kinds) still
load, sample the same, serve, get a card and resume. tests/data/runs-0.1.0 holds two such runs and what that
version sampled from them (expected.json), made with the commit before the change:

    genlab train vae --data digits --conditional --preset tiny --steps 20 --out vae --set model.width=4 \\
        --set model.latent_dim=2 --set model.label_dim=4
    genlab train gpt --data pycode --preset tiny --steps 20 --out gpt --set model.block_size=16 \\
        --set model.n_layer=1 --set model.d_model=16 --set model.n_head=2 --set data.count=2000
    (both with --set train.val_every=100 --set train.sample_every=100; the samples: see test_they_sample_the_same)
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.kinds.text.textgen import generate
from serve_util import ready_client

OLD = Path(__file__).parent / "data" / "runs-0.1.0"
EXPECTED = json.loads((OLD / "expected.json").read_text())


@pytest.fixture
def old(tmp_path) -> Path:
    """A copy: resuming writes into a run."""
    shutil.copytree(OLD, tmp_path / "old")
    return tmp_path / "old"


def test_they_sample_the_same(old):
    vae = genlab.load(old / "vae", device="cpu")
    x = vae.sample(4, cond=torch.tensor([0, 3, 5, 9]), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(x.flatten(), torch.tensor(EXPECTED["vae_samples"]), atol=1e-5)
    assert generate(old / "gpt", "def ", 2, seed=5, max_new_tokens=24, temperature=0.9) == EXPECTED["gpt_text"]


def test_they_serve_and_get_a_card(old):
    with ready_client([old / "vae", old / "gpt"]) as client:
        info = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert info["vae"]["routes"] == ["images", "interpolate"] and info["gpt"]["routes"] == ["text"]
        assert client.post("/v1/models/vae/images", json={"n": 2, "label": 1}).status_code == 200
        text = client.post("/v1/models/gpt/text", json={"prompt": "def ", "max_new_tokens": 24, "seed": 5,
                                                        "temperature": 0.9})
        assert text.status_code == 200 and text.json()["text"] == EXPECTED["gpt_text_one"]
    for run in ("vae", "gpt"):
        assert main(["card", str(old / run)]) == 0


def test_they_resume(old, capsys):
    for run in ("vae", "gpt"):
        assert main(["train", "--resume", str(old / run), run, "--steps", "24", "--no-progress"]) == 0
        assert json.loads((old / run / "checkpoint.json").read_text())["step"] == 24
