"""A new kind of data and a new family of it, defined in this file alone, go through `genlab train`, `sample`,
`eval`, `compare`, `card`, `serve` and the contract suite with no edit to genlab: registered in code here, and
through installed entry points (`genlab.kinds`, `genlab.families`) in the second test.

The kind is a toy "1-D signal": sine waves of three frequency bands (the label), 32 samples long; the family an
independent Gaussian per position and class, sampled with a `scale` control on the noise."""

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from genlab import kinds, registry
from genlab.cli import main
from serve_util import ready_client

TOY = '''
"""A toy kind (1-D signals) and a toy family of it (a Gaussian per position and class), outside genlab."""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn

from genlab.kinds.base import CardText, Kind, Route
from genlab.models.base import GenerativeModel, as_labels, randn
from genlab.models.controls import Control
from genlab.prepare import Prepared
from genlab.registry import Family
from genlab.runs import atomic_write
from genlab.serve.schemas import Body
from genlab.serve.served import check_label, check_range

LENGTH, BANDS = 32, ((1, 2), (3, 4), (6, 8))   # cycles per signal for each class


def signals(n: int, seed: int):
    g = np.random.default_rng(seed)
    y = g.integers(0, len(BANDS), n)
    cycles = np.array([g.uniform(*BANDS[k]) for k in y])
    t = np.arange(LENGTH) / LENGTH
    x = 0.8 * np.sin(2 * np.pi * (cycles[:, None] * t + g.uniform(0, 0.05, (n, 1))))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


class Loader:
    def __init__(self, x, y, batch_size, seed, rank=0, world=1, device=None):
        self.x, self.y, self.bs, self.seed, self.device = x, y, batch_size, seed, device
        self.unit, self.items_per_batch = "signal", batch_size

    def batch(self, i):
        idx = torch.randint(len(self.x), (self.bs,), generator=torch.Generator().manual_seed(self.seed * 7919 + i))
        return {"x": self.x[idx].to(self.device), "y": self.y[idx].to(self.device)}


def band_power(x):
    """Each signal's dominant frequency (cycles per signal)."""
    return np.abs(np.fft.rfft(np.asarray(x), axis=1))[:, 1:].argmax(1) + 1


class SignalKind(Kind):
    def prepare(self, cfg, run_dir, *, resume):
        x, y = signals(cfg.data.count, cfg.data.seed)
        k = max(1, int(cfg.data.val_fraction * len(x)))
        cfg.model.length = LENGTH
        cfg.model.num_classes = len(BANDS) if cfg.data.conditional else 0
        val = [{"x": x[:k], "y": y[:k]}]

        def preview(model, step, run_dir):
            with torch.no_grad():
                s = model.sample(6, generator=torch.Generator().manual_seed(0))
            out = Path(run_dir) / "samples" / f"step-{step:07d}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out, "\\n\\n----------\\n\\n".join(" ".join(f"{v:.2f}" for v in row) for row in s.tolist()))
            return {}, None

        return Prepared(lambda rank=0, world=1, device=None: Loader(x[k:], y[k:], cfg.train.batch_size,
                                                                   cfg.train.seed, rank, world, device),
                        lambda device: [{kk: v.to(device) for kk, v in b.items()} for b in val], preview,
                        {"name": "sines", "count": len(x), "classes": ["low", "mid", "high"]})

    def datasets(self):
        return {"sines": "sine waves in three frequency bands (toy)"}

    def write_samples(self, model, out, *, n, seed, label, controls, settings):
        s = model.sample(n, cond=label, generator=torch.Generator().manual_seed(seed), **controls)
        meta = {"AI-Generated": "true", "genlab:seed": str(seed), "genlab:settings": json.dumps(controls)}
        np.savetxt(out, s.numpy(), delimiter=",", header=json.dumps(meta))
        return f"wrote {n} signals to {out}"

    def evaluate(self, run_dir, *, n=300, seed=0, controls=None, progress=True, log=print, **_):
        from genlab.loading import load
        model = load(run_dir)
        cfg = model.run.config
        real, real_y = signals(cfg.data.count, cfg.data.seed)
        k = model.config.num_classes
        cond = torch.arange(n) % k if k else None
        fake = model.sample(n, cond=cond, generator=torch.Generator().manual_seed(seed), **(controls or {}))
        rows = [{"metric": "mean_gap", "axis": "realism", "n_samples": n, "note": "|mean fake - mean real|",
                 "value": float((fake.mean(0) - real.mean(0)).abs().mean())}]
        if k:
            hit = [BANDS[c][0] - 1 <= f <= BANDS[c][1] + 1 for f, c in zip(band_power(fake), cond.tolist())]
            rows.append({"metric": "band_accuracy", "axis": "controllability", "n_samples": n,
                         "note": "dominant frequency in the label's band", "value": float(np.mean(hit))})
        report = {"run": str(run_dir), "family": cfg.family, "data": cfg.data.name, "seed": seed, "n_samples": n,
                  "judge": {"id": ""}, "rows": rows}
        atomic_write(Path(run_dir) / "eval.json", json.dumps(report, indent=2))
        return report

    def info(self, model):
        return {"conditioning": "labels" if model.config.num_classes else "none",
                "signal": {"length": model.config.length}}

    def tiny(self, cfg, *, labelled):
        cfg.length, cfg.num_classes = LENGTH, len(BANDS) if labelled else 0

    def example(self, cfg, n, generator):
        x, y = signals(n, int(torch.randint(1000, (1,), generator=generator)))
        return {"x": x, "y": y % max(cfg.num_classes, 1)}

    def sample_kwargs(self, model, n):
        return {"cond": torch.arange(n) % model.config.num_classes if model.config.num_classes else None}


class SignalsRequest(Body):
    n: int = Field(1, ge=1, le=64)
    seed: int = Field(0, ge=0)
    label: int | None = Field(None, ge=0)
    scale: float | None = Field(None, ge=0, le=2)


async def handle(state, served, req, request):
    check_label(served, req.label)
    controls = {} if req.scale is None else {"scale": req.scale}
    check_range(served, controls)
    out = await state.run(served.name, "signals", tuple(controls.items()), req.n, (req, controls))
    return {"model": served.name, "signals": out, "provenance": served.provenance}


def run(served, jobs):
    return [served.model.sample(req.n, cond=req.label, generator=torch.Generator().manual_seed(req.seed),
                                **controls).tolist() for req, controls in (j.payload for j in jobs)]


ROUTES = (Route("signals", SignalsRequest, handle, run, applies=lambda m: m.generative, summary="n signals"),)
SIGNAL = SignalKind("signal", "1-D signals", CardText("signals", ("A toy: its only metric is a mean gap.",)),
                    serve=lambda: ROUTES, sample_suffix=".csv", conditioning="labels")


@dataclass
class Gauss1DConfig:
    family: str = "gauss1d"
    length: int = 0          # set from the data
    num_classes: int = 0     # set from the data with --conditional


class Gauss1D(GenerativeModel):
    family = "gauss1d"
    CONTROLS = (Control("scale", float, 1.0, 0.0, 2.0, help="noise scale (0 = the mean signal)"),)

    def __init__(self, config):
        super().__init__(config)
        shape = (max(config.num_classes, 1), config.length)
        self.mu, self.log_sigma = nn.Parameter(torch.zeros(shape)), nn.Parameter(torch.zeros(shape))

    def _rows(self, y):
        return (self.mu, self.log_sigma) if y is None else (self.mu[y], self.log_sigma[y])

    def loss(self, batch):
        mu, log_sigma = self._rows(batch["y"] if self.config.num_classes else None)
        return {"loss": (0.5 * ((batch["x"] - mu) / log_sigma.exp()) ** 2 + log_sigma).sum(1).mean()}

    @torch.no_grad()
    def sample(self, n, *, cond=None, generator=None, scale=1.0):
        self.controls()["scale"].check(scale)
        y = as_labels(cond, n, self.config.num_classes, self.mu.device)
        mu, log_sigma = self._rows(y if y is not None else torch.zeros(n, dtype=torch.long))
        return mu + scale * log_sigma.exp() * randn(mu.shape, generator, self.mu.device)


PRESETS = {p: {"train.batch_size": 64, "train.lr": 0.05, "train.warmup_steps": 1} for p in ("tiny", "small", "base")}
FAMILY = Family("gauss1d", Gauss1DConfig, Gauss1D, PRESETS, "signal", "a Gaussian per position (toy plug-in)")
'''


def register_toy(monkeypatch) -> types.ModuleType:
    """The toy kind and family, registered in code (as a user's own script would), until the test ends."""
    module = types.ModuleType("toy_signal_kind")
    exec(compile(TOY, "toy_signal_kind.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "toy_signal_kind", module)
    monkeypatch.setitem(kinds.KINDS, "signal", module.SIGNAL)
    monkeypatch.setitem(registry.FAMILIES, "gauss1d", module.FAMILY)
    return module


@pytest.fixture
def toy(monkeypatch):
    return register_toy(monkeypatch)


def train_toy(run: Path, *extra: str) -> Path:
    assert main(["train", "gauss1d", "--data", "sines", "--steps", "120", "--out", str(run), "--no-progress",
                 "--set", "train.val_every=60", "--set", "train.sample_every=60", "--set", "data.count=600",
                 *extra]) == 0
    return run


def test_a_kind_and_family_defined_here_go_through_every_command(toy, tmp_path, capsys):
    run, plain = tmp_path / "sig", tmp_path / "sig-plain"
    train_toy(run, "--conditional")
    train_toy(plain)
    assert (run / "samples" / "step-0000120.txt").exists()   # the kind's training preview

    # sample: the kind writes the file, with the family's declared control as a CLI flag
    assert main(["sample", str(run), "-n", "9", "--label", "2", "--scale", "0", "--out", str(tmp_path / "s.csv")]) == 0
    means = np.loadtxt(tmp_path / "s.csv", delimiter=",")
    assert means.shape == (9, 32) and np.allclose(means, means[0])           # scale 0: the class mean, every row
    assert main(["sample", str(run), "-n", "3", "--scale", "3"]) == 1          # out of its declared range
    assert "scale" in capsys.readouterr().err

    # eval: the kind's metrics; a trained conditional model follows its label
    for r in (run, plain):
        assert main(["eval", str(r), "-n", "300"]) == 0
    rows = {row["metric"]: row["value"] for row in json.loads((run / "eval.json").read_text())["rows"]}
    assert rows["mean_gap"] < 0.1 and rows["band_accuracy"] > 0.6, rows

    # compare and card
    capsys.readouterr()
    assert main(["compare", str(run), str(plain), "--format", "csv"]) == 0
    table = capsys.readouterr().out
    assert "band_accuracy" in table and "sig-plain" in table and "mean_gap" in table
    assert main(["card", str(run)]) == 0
    card = (run / "MODEL_CARD.md").read_text()
    assert "producing signals presented as real" in card and "A toy: its only metric is a mean gap." in card
    assert "band_accuracy" in card and "step-0000120" in card

    # serve: the kind's route answers and the model is listed with it
    with ready_client([run]) as client:
        info = client.get("/v1/models").json()["models"][0]
        assert info["kind"] == "signal" and info["routes"] == ["signals"] and info["signal"] == {"length": 32}
        assert info["controls"]["scale"] == {"type": "float", "default": 1.0, "min": 0.0, "max": 2.0}
        body = {"n": 2, "seed": 5, "label": 1}
        a, b = (client.post("/v1/models/sig/signals", json=body) for _ in range(2))
        assert a.status_code == 200 and a.json()["signals"] == b.json()["signals"]
        assert np.array(a.json()["signals"]).shape == (2, 32)
        assert client.post("/v1/models/sig/signals", json={"label": 7}).status_code == 422
        assert client.post("/v1/models/sig/images", json={}).status_code == 404   # not its kind's route

    # the contract suite takes the family, with its kind's examples
    import test_contract as contract

    for conditional in (False, True):
        contract.test_loss_is_finite_and_backward_reaches_every_parameter("gauss1d", conditional)
    contract.test_train_step_lowers_the_loss_on_a_fixed_batch("gauss1d")
    contract.test_save_load_round_trip_through_safetensors("gauss1d", tmp_path / "ck")
    contract.test_sampling_is_seeded_and_follows_the_shared_vocabulary("gauss1d")
    contract.test_a_kind_implements_its_contract(toy.SIGNAL)
    contract.test_no_two_kinds_claim_the_same_route()


def install(site: Path) -> dict:
    """The toy as an installed package: its own sys.path entry, with the dist-info that makes its entry points
    visible."""
    info = site / "toy_signal_kind-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "toy_signal_kind.py").write_text(TOY)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-signal-kind\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[genlab.kinds]\nsignal = toy_signal_kind:SIGNAL\n\n"
                                           "[genlab.families]\ngauss1d = toy_signal_kind:FAMILY\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def test_an_installed_kind_and_family_train_sample_evaluate_and_pass_the_contract(tmp_path):
    env = install(tmp_path / "site")

    def genlab(*args):
        out = subprocess.run([sys.executable, "-m", "genlab", *args], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "sines" in genlab("data", "list")
    genlab("train", "gauss1d", "--data", "sines", "--conditional", "--steps", "120", "--out", "run", "--no-progress")
    genlab("sample", "run", "-n", "4", "--label", "0")                  # the kind's default file: samples.csv
    assert np.loadtxt(tmp_path / "samples.csv", delimiter=",").shape == (4, 32)
    genlab("eval", "run")
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["rows"][0]["metric"] == "mean_gap"
    genlab("card", "run")
    contract = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(Path(__file__).parent / "test_contract.py"), "-k", "gauss1d or signal"],
                              env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert contract.returncode == 0, contract.stdout[-2000:]
    passed = re.search(r"(\d+) passed", contract.stdout)
    assert passed and int(passed.group(1)) >= 6 and "skipped" not in contract.stdout, contract.stdout[-2000:]
