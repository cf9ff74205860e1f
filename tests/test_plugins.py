"""A family from another installed package: an entry point in the group `genlab.families` registers it, and
`genlab train`, `sample` and the family contract take it like a built-in one, with no edit to genlab."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

TOY = '''
"""A toy image family outside genlab: an independent Gaussian per pixel (and per class when conditional)."""
from dataclasses import dataclass

import torch
from torch import nn

from genlab.models.base import GenerativeModel, as_labels, randn
from genlab.registry import Family


@dataclass
class PixelGaussConfig:
    family: str = "pixelgauss"
    in_channels: int = 1      # set from the data
    image_size: int = 8       # set from the data
    num_classes: int = 0      # set from the data with --conditional


class PixelGauss(GenerativeModel):
    family = "pixelgauss"

    def __init__(self, config):
        super().__init__(config)
        c = config
        shape = (max(c.num_classes, 1), c.in_channels, c.image_size, c.image_size)
        self.mu, self.log_sigma = nn.Parameter(torch.zeros(shape)), nn.Parameter(torch.zeros(shape))

    def _rows(self, y):
        return (self.mu, self.log_sigma) if y is None else (self.mu[y], self.log_sigma[y])

    def loss(self, batch):
        mu, log_sigma = self._rows(batch.get("y") if self.config.num_classes else None)
        nll = (0.5 * ((batch["x"] - mu) / log_sigma.exp()) ** 2 + log_sigma).flatten(1).sum(1).mean()
        return {"loss": nll}

    @torch.no_grad()
    def sample(self, n, *, cond=None, generator=None, **controls):
        if controls:
            raise TypeError(f"pixelgauss.sample takes no controls; got {', '.join(controls)}")
        y = as_labels(cond, n, self.config.num_classes, self.mu.device)
        mu, log_sigma = self._rows(y if y is not None else torch.zeros(n, dtype=torch.long))
        return (mu + log_sigma.exp() * randn(mu.shape, generator, self.mu.device)).clamp(-1, 1)


PRESETS = {name: {"train.batch_size": 32, "train.lr": 0.05} for name in ("tiny", "small", "base")}
FAMILY = Family("pixelgauss", PixelGaussConfig, PixelGauss, PRESETS, "image", "a Gaussian per pixel (plug-in)")
'''


def install_plugin(site: Path) -> dict:
    """A package on its own sys.path entry, with the dist-info that makes its entry point visible."""
    info = site / "toy_genlab_family-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "toy_genlab_family.py").write_text(TOY)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-genlab-family\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[genlab.families]\npixelgauss = toy_genlab_family:FAMILY\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def genlab(env, *args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genlab", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_an_installed_family_trains_samples_and_passes_the_contract(tmp_path):
    env = install_plugin(tmp_path / "site")
    out = genlab(env, "train", "pixelgauss", "--data", "digits", "--conditional", "--steps", "150", "--out", "run",
                 "--no-progress", "--set", "train.val_every=100000", "--set", "train.sample_every=100000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["family"] == "pixelgauss"
    out = genlab(env, "sample", "run", "-n", "30", "--label", "3", "--out", "threes.npz", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with np.load(tmp_path / "threes.npz") as z:
        threes, labels = z["images"], z["labels"]
    assert threes.shape == (30, 8, 8, 1) and (labels == 3).all()
    # it learned the class: the mean sample of label 3 is nearer the data's 3s than its 0s
    digits = load_digits()
    real, mean = digits.images / 16.0 * 255, threes.mean(0)[..., 0]   # the .npz holds uint8 pixels
    assert np.abs(mean - real[digits.target == 3].mean(0)).mean() < np.abs(mean - real[digits.target == 0].mean(0)).mean()
    # the contract suite, which runs over every registered family, takes it too
    contract = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(Path(__file__).parent / "test_contract.py"), "-k", "pixelgauss"],
                              env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert contract.returncode == 0 and " passed" in contract.stdout, contract.stdout[-2000:]
    assert "failed" not in contract.stdout.splitlines()[-1]


def test_a_broken_plugin_is_skipped_with_a_warning_and_genlab_still_works(tmp_path):
    site = tmp_path / "site"
    env = install_plugin(site)
    (site / "toy_genlab_family.py").write_text("raise ImportError('this plug-in is broken')\n")
    out = genlab(env, "--version", cwd=tmp_path)
    assert out.returncode == 0 and "skipped the genlab.families plug-in 'pixelgauss'" in out.stderr
