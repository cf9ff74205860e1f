"""torchrun / DDP on CPU (gloo): two processes, sharded data, one writer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_util import parameter_digest

import genlab
from conftest import needs_espeak
from genlab.data.images import ImageDataset
from genlab.data.loader import BatchLoader
from genlab.runs import read_metrics

# A small labelled spoken-digits set (8 kHz, 1 s clips), synthesised by espeak-ng and cached after the first build.
# CI (.ci/run) installs espeak-ng, and there a missing one fails; elsewhere the audio cases are skipped without it.
SPOKEN = ["--conditional", "--set", "data.count=200"]
# The metric whose fall says that training learnt something: "train/loss" unless named here. WaveGAN's loss is
# G's, -E[D(G(z))], which rises as the critic learns; the critic's (WGAN-GP) falls.
FALLS = {"wavegan": "train/d_loss"}


def test_ranks_see_disjoint_shards_of_each_global_batch():
    ds = ImageDataset(torch.arange(40.0).view(40, 1, 1, 1), None)
    a = BatchLoader(ds, 4, seed=0, rank=0, world=2)
    b = BatchLoader(ds, 4, seed=0, rank=1, world=2)
    seen = []
    for i in range(a.per_epoch):
        xa, xb = a.batch(i)["x"].flatten().tolist(), b.batch(i)["x"].flatten().tolist()
        assert not set(xa) & set(xb)
        seen += xa + xb
    assert sorted(seen) == list(range(40))          # one epoch covers the data exactly once


@pytest.mark.parametrize("family, data, shape, extra", [
    ("vae", "digits", (2, 1, 8, 8), []),
    ("gan", "digits", (2, 1, 8, 8), []),
    ("gpt", "pycode", None, []),
    pytest.param("wavegan", "spoken-digits", (2, 1, 8000), SPOKEN, marks=needs_espeak),
    pytest.param("audio-ddpm", "spoken-digits", (2, 1, 8000), SPOKEN + ["--set", "train.batch_size=8"],
                 marks=needs_espeak),
    ("video-ddpm", "moving-shapes", (2, 6, 3, 16, 16), ["--set", "data.count=128", "--set", "data.frames=6",
                                                        "--set", "data.image_size=16", "--set", "train.batch_size=8"]),
    ("pix2pix", "edges2shapes", None, ["--set", "data.count=128", "--set", "data.image_size=16",
                                       "--set", "train.batch_size=8"]),
])
def test_torchrun_two_processes_train_and_only_rank0_writes(family, data, shape, extra, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(genlab.__file__).parents[1])}
    out, hashes = tmp_path / "ddp", tmp_path / "hashes"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).with_name("ddp_util.py")), str(hashes),
           "train", family, "--data", data, "--preset", "tiny", "--steps", "40",
           "--out", str(out), "--no-progress", "--set", "train.log_every=10", "--set", "train.batch_size=32", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the ranks trained on disjoint shards: only the gradient all-reduce keeps their weights identical
    digests = [(hashes / f"rank{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1], "the two ranks ended with different weights: they never synchronised"
    assert digests[0] == parameter_digest(genlab.load(out, ema=False)), "rank 0's weights are not the run's"
    assert proc.stdout.count("run folder:") == 1                  # rank 1 printed nothing
    ck = json.loads((out / "checkpoint.json").read_text())
    assert ck["world_size"] == 2 and ck["step"] == 40
    rows = [r for r in read_metrics(out) if "train/loss" in r]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]          # written once, by rank 0
    falls = FALLS.get(family, "train/loss")
    assert rows[-1][falls] < rows[0][falls]
    model = genlab.load(out)
    if shape:
        assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == shape
