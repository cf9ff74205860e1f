"""End-to-end checks of the image metrics in a real judge's feature space (genlab.evaluation).

A small classifier judge is trained once per module on the built-in `digits` data; the metrics must
rank real, blurred and noise images correctly, see dropped classes, and flag copies of training
images. Then `genlab.api.evaluate` is run on tiny VAE runs (labelled and unlabelled data) and the
tables and report pages built from its eval.json are checked.
"""

import base64
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab.api as api
import genlab.kinds.image.judge as judge_mod
from genlab.config import DataConfig
from genlab.data import load_images, split
from genlab.evaluation import image_metrics as M
from genlab.evaluation import report as report_mod
from genlab.evaluation.judged import equal_per_class
from genlab.kinds.image.judge import load_judge

QUIET = dict(progress=False, log=lambda *a, **k: None)
RARE = ["train.val_every=100000", "train.sample_every=100000", "train.ckpt_every=100000"]
N = 180  # the digits held-out split: round(1797 * 0.1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """GENLAB_CACHE for module-scoped fixtures, which run before conftest's per-test isolation."""
    path = tmp_path_factory.getbasetemp() / "genlab-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("eval") / "judge"
    api.train("classifier", data="digits", out=out, steps=300,
              overrides=["model.width=16", "train.batch_size=128", "train.lr=2e-3", "train.val_every=1000",
                         "train.sample_every=100000", "train.ckpt_every=100000"], **QUIET)
    return out


@pytest.fixture(scope="module")
def judge(judge_dir):
    return load_judge(judge_dir)


@pytest.fixture(scope="module")
def data():
    cfg = DataConfig()  # val_fraction=0.1, seed=0: the split every digits run uses
    train, val = split(load_images(cfg), cfg.val_fraction, cfg.seed)
    assert len(val) == N
    return train, val


@pytest.fixture(scope="module")
def real_feats(judge, data):
    return judge.features(data[0].images)


def blur(images: torch.Tensor) -> torch.Tensor:
    """3x3 binomial blur, edges replicated."""
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate")
    return torch.nn.functional.conv2d(padded, k.view(1, 1, 3, 3))


def noise(n: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


# ---- the judge itself --------------------------------------------------------------------------

def test_judge_is_trustworthy(judge, data):
    _, val = data
    assert judge.kind == "classifier" and judge.has_classes and judge.num_classes == 10
    acc = (judge.probs(val.images).argmax(1) == val.labels.numpy()).mean()
    assert acc > 0.9, f"the judge's held-out accuracy {acc:.3f} is too low for the metric checks below"
    assert judge.accuracy(val.images, val.labels) == pytest.approx(acc)


# ---- realism: FID and KID rank real < blurred < noise ----------------------------------------

def test_fid_kid_rank_real_blurred_noise(judge, data, real_feats):
    _, val = data
    sets = {"real": val.images, "blurred": blur(val.images), "noise": noise(N)}
    fid, kid = {}, {}
    for name, images in sets.items():
        feats = judge.features(images)
        assert feats.shape == (N, judge.model.config.feature_dim)
        fid[name] = M.fid(real_feats, feats)
        kid[name] = M.kid(real_feats, feats, seed=0)[0]
    print("FID", fid, "KID", kid)
    assert fid["real"] < fid["noise"] / 5, fid
    assert fid["real"] < fid["blurred"] < fid["noise"], fid
    assert kid["real"] < kid["noise"] / 5, kid
    assert kid["real"] < kid["blurred"] < kid["noise"], kid
    # FID's mean term: shifting every sample feature by c adds ||mu_r - mu_f - c||^2 - ||mu_r - mu_f||^2
    held = judge.features(val.images)
    c = np.full(held.shape[1], 0.5)
    gap = real_feats.mean(0) - held.mean(0)
    expected = fid["real"] + np.sum((gap - c) ** 2) - np.sum(gap ** 2)
    assert M.fid(real_feats, held + c) == pytest.approx(expected, rel=1e-6)


def test_precision_and_density_reject_noise(judge, data, real_feats):
    """docs/design.md: with L2-normalised features noise is off the real manifold (precision near 0)."""
    _, val = data
    held = judge.features(val.images)
    p_real, r_real = M.precision_recall(real_feats, held)
    p_noise, _ = M.precision_recall(real_feats, judge.features(noise(N)))
    d_noise, c_noise = M.density_coverage(real_feats, judge.features(noise(N)))
    assert p_real > 0.7 and p_noise < 0.1, (p_real, p_noise)
    assert d_noise < 0.1 and c_noise < 0.05, (d_noise, c_noise)
    # features shrunk towards the origin (the faint-junk failure mode) score exactly as before
    assert M.precision_recall(real_feats, 0.05 * held) == pytest.approx((p_real, r_real))
    assert M.density_coverage(real_feats, 0.05 * held) == pytest.approx(M.density_coverage(real_feats, held))


# ---- diversity: dropping half the classes ------------------------------------------------------

def test_dropping_half_the_classes(judge, data, real_feats):
    """Held-out + extra training images, all classes vs labels 0-4 only, at the same N."""
    train, val = data
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    n = 2 * N
    full = torch.cat([val.images, train.images[perm[:n - N]]])
    full_labels = torch.cat([val.labels, train.labels[perm[:n - N]]])
    keep_val = val.labels < 5
    low = perm[train.labels[perm] < 5]
    n_extra = n - int(keep_val.sum())
    half = torch.cat([val.images[keep_val], train.images[low[:n_extra]]])
    half_labels = torch.cat([val.labels[keep_val], train.labels[low[:n_extra]]])
    assert len(half) == len(full) == n
    assert set(half_labels.tolist()) == {0, 1, 2, 3, 4} and set(full_labels.tolist()) == set(range(10))

    out = {}
    for name, images in (("full", full), ("half", half)):
        feats = judge.features(images)
        p, r = M.precision_recall(real_feats, feats)
        d, c = M.density_coverage(real_feats, feats)
        pred = judge.probs(images).argmax(1)
        out[name] = dict(precision=p, recall=r, density=d, coverage=c, fid=M.fid(real_feats, feats),
                         entropy=M.normalised_class_entropy(pred, 10))
    print(out)
    full_m, half_m = out["full"], out["half"]
    assert half_m["recall"] < full_m["recall"] - 0.25, out        # diversity falls clearly
    assert half_m["coverage"] < full_m["coverage"] - 0.15, out
    assert half_m["precision"] > full_m["precision"] - 0.1, out   # realism holds
    assert half_m["precision"] > 0.8, out
    assert half_m["fid"] > 2 * full_m["fid"], out                # FID sees the missing classes too
    assert full_m["entropy"] > 0.95, out
    assert half_m["entropy"] == pytest.approx(math.log(5) / math.log(10), abs=0.05), out


# ---- novelty: memorisation ---------------------------------------------------------------------

def test_memorisation_flags_training_copies_only(data):
    train, val = data
    copies = train.images[:N]
    assert M.memorisation_fraction(copies, train.images) > 0.95
    g = torch.Generator().manual_seed(0)
    near_copies = (copies + 0.01 * torch.randn(copies.shape, generator=g)).clamp(-1, 1)
    assert M.memorisation_fraction(near_copies, train.images) > 0.95
    assert M.memorisation_fraction(val.images, train.images) < 0.05
    # the documented limit: a pixel-space test does not flag blurred copies (docs/design.md)
    assert M.memorisation_fraction(blur(copies), train.images) < 0.5


# ---- evaluate_run end to end ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory, cache):
    base = tmp_path_factory.mktemp("vae-runs")
    runs = {}
    for name, conditional in (("vae-uncond", False), ("vae-cond", True)):
        runs[name] = api.train("vae", data="digits", out=base / name, preset="tiny", steps=60, overrides=RARE,
                               conditional=conditional, **QUIET).path
    return runs


EVAL_LOG: list[str] = []   # what the conditional run's evaluation logged


@pytest.fixture(scope="module")
def evaluated(vae_runs, judge_dir):
    reports = {"vae-uncond": api.evaluate(vae_runs["vae-uncond"], n=200, judge=judge_dir, progress=False),
               "vae-cond": api.evaluate(vae_runs["vae-cond"], n=200, seed=3, judge=str(judge_dir), progress=False,
                                        log=EVAL_LOG.append)}
    return reports


def test_evaluate_logs_each_stage_with_its_sizes(evaluated, data):
    """A long evaluation (minutes on 60,000 training images) says where it is: samples, features, radii, metrics."""
    train, val = data
    assert [line.split(" (")[0].split(" samples")[0] for line in EVAL_LOG] == [
        "eval: 200", "eval: features done", "eval: radii done"]
    assert f"{len(train.images)} training and {len(val.images)} held-out images" in EVAL_LOG[0]


def _rows(report) -> dict:
    return {r["metric"]: r for r in report["rows"]}


def test_evaluate_writes_eval_json_with_provenance(vae_runs, evaluated, judge_dir):
    for name, seed in (("vae-uncond", 0), ("vae-cond", 3)):
        report = evaluated[name]
        path = Path(vae_runs[name]) / "eval.json"
        assert path.exists()
        on_disk = json.loads(path.read_text())
        assert on_disk["rows"] == json.loads(json.dumps(report["rows"]))
        assert on_disk["n_samples"] == 200 and on_disk["seed"] == seed
        assert report["judge"]["id"] == f"classifier:{Path(judge_dir).name}"
        assert report["judge"]["kind"] == "classifier" and report["judge"]["heldout_accuracy"] > 0.9
        rows = _rows(report)
        assert len(rows) == len(report["rows"]), "duplicate metric rows"
        for row in report["rows"]:
            assert row["judge"] == report["judge"]["id"], row
            assert row["seed"] == seed, row
            assert isinstance(row["n_samples"], int) and row["n_samples"] > 0, row
        for metric in ("fid", "kid", "precision", "recall", "density", "coverage", "inception_score",
                       "class_entropy", "memorisation"):
            assert rows[metric]["n_samples"] == 200, rows[metric]
            assert rows[metric]["value"] is not None and math.isfinite(rows[metric]["value"]), rows[metric]
        for metric in ("fid", "kid", "precision", "recall", "density", "coverage"):
            assert rows[f"{metric}@floor_n"]["n_samples"] == N
            assert rows[metric]["n_reference"] == len(load_images(DataConfig())) - N
        assert report["floor"]["n_samples"] == N
        for metric in ("precision", "recall", "coverage", "class_entropy", "memorisation"):
            assert 0 <= rows[metric]["value"] <= 1, rows[metric]
        assert 1 <= rows["inception_score"]["value"] <= 10


def test_evaluate_floor_matches_real_vs_real(evaluated, judge, data, real_feats):
    """The floor in eval.json is held-out real vs training features in the same judge."""
    floor = evaluated["vae-uncond"]["floor"]
    held = judge.features(data[1].images)
    assert floor["fid"] == pytest.approx(M.fid(real_feats, held), rel=1e-6)
    assert floor["kid"] == pytest.approx(M.kid(real_feats, held, seed=0)[0], rel=1e-6, abs=1e-9)
    # a 60-step VAE is far from real data: its samples must score worse than the floor
    rows = _rows(evaluated["vae-uncond"])
    assert rows["fid@floor_n"]["value"] > floor["fid"]
    assert rows["precision@floor_n"]["value"] < floor["precision"]


def test_evaluate_floor_at_fewer_samples_than_heldout(vae_runs, evaluated, judge, data, real_feats, tmp_path):
    """n < the held-out count: the floor and the @floor_n rows are both taken at N = n (docs/design.md)."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(vae_runs["vae-uncond"], run)
    report = api.evaluate(run, n=100, judge=judge, progress=False)
    rows = _rows(report)
    assert report["floor"]["n_samples"] == 100
    for metric in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert rows[f"{metric}@floor_n"]["n_samples"] == 100, rows[f"{metric}@floor_n"]
    held = judge.features(data[1].images[:100])
    assert report["floor"]["fid"] == pytest.approx(M.fid(real_feats, held), rel=1e-6)
    assert report["judge"]["id"] == evaluated["vae-uncond"]["judge"]["id"]  # a Judge object works as well


def test_evaluate_conditional_accuracy(vae_runs, evaluated, judge):
    cond, uncond = _rows(evaluated["vae-cond"]), _rows(evaluated["vae-uncond"])
    assert "conditional_accuracy" not in uncond
    row = cond["conditional_accuracy"]
    assert 0 <= row["value"] <= 1 and row["axis"] == "controllability" and row["n_samples"] == 200
    # recompute from the same seeded samples with balanced labels: the row must match
    model = api.load(vae_runs["vae-cond"])
    labels = torch.arange(200) % 10
    samples = model.sample(200, cond=labels, generator=torch.Generator().manual_seed(3))
    pred = judge.probs(samples).argmax(1)
    assert row["value"] == pytest.approx(float((pred == labels.numpy()).mean()))


def test_class_coverage_is_recomputed_from_the_same_samples_at_equal_per_class_counts(vae_runs, evaluated, judge,
                                                                                        data):
    cond, uncond = _rows(evaluated["vae-cond"]), _rows(evaluated["vae-uncond"])
    assert "class_coverage" not in uncond
    row = cond["class_coverage"]
    train, val = data
    labels = torch.arange(200) % 10
    samples = api.load(vae_runs["vae-cond"]).sample(200, cond=labels, generator=torch.Generator().manual_seed(3))
    fake_at, held_at = equal_per_class(labels, val.labels)
    for c in range(10):   # the held-out split has fewer than 20 of most digits: that many of each side
        assert (labels[fake_at] == c).sum() == (val.labels[held_at] == c).sum() == min(20, (val.labels == c).sum())
    real = judge.features(train.images)
    assert row["value"] == pytest.approx(M.class_coverage(real, train.labels, judge.features(samples)[fake_at],
                                                          labels[fake_at]))
    assert row["floor"] == pytest.approx(M.class_coverage(real, train.labels, judge.features(val.images)[held_at],
                                                          val.labels[held_at]))
    assert row["n_samples"] == len(fake_at) and row["axis"] == "diversity" and 0 < row["floor"] <= 1


def test_evaluate_vae_heldout_rows(evaluated):
    for report in evaluated.values():
        rows = _rows(report)
        assert rows["heldout_recon_mse"]["value"] > 0 and math.isfinite(rows["heldout_elbo"]["value"])
        assert rows["heldout_recon_mse"]["n_samples"] == N and rows["heldout_elbo"]["n_samples"] == N


def test_evaluate_unlabelled_data_uses_an_ae_judge(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    images = load_digits().images[:300].astype(np.float32) / 16  # [0, 1], no labels
    npz = tmp_path / "unlabelled.npz"
    np.savez(npz, images=images)
    monkeypatch.setitem(judge_mod.JUDGE_STEPS, "ae", 50)
    run = api.train("vae", data=str(npz), out=tmp_path / "run", preset="tiny", steps=30, overrides=RARE, **QUIET)
    report = api.evaluate(run.path, n=100, progress=False, log=lambda *a, **k: None)
    j = report["judge"]
    assert j["kind"] == "ae" and j["steps"] == 50 and j["heldout_accuracy"] is None
    assert j["id"].startswith("ae:")
    rows = _rows(report)
    for metric in ("inception_score", "class_entropy"):
        assert rows[metric]["value"] is None
        assert "no labels" in rows[metric]["note"] and "autoencoder" in rows[metric]["note"]
    assert "conditional_accuracy" not in rows
    for metric in ("fid", "kid", "precision", "recall", "coverage", "memorisation"):
        assert rows[metric]["value"] is not None and math.isfinite(rows[metric]["value"]), rows[metric]
        assert rows[metric]["judge"] == j["id"]
    assert json.loads((run.path / "eval.json").read_text())["judge"]["kind"] == "ae"


# ---- tables and report pages ---------------------------------------------------------------------

def test_compare_markdown_and_csv(vae_runs, evaluated):
    runs = [vae_runs["vae-uncond"], vae_runs["vae-cond"]]
    md = report_mod.compare(runs, fmt="markdown")
    lines = md.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert "fid" in header and "run" in header and len(lines) == 4
    body = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert set(body) == {"vae-uncond", "vae-cond"}
    fid_col = header.index("fid")
    for name, report in evaluated.items():
        cell = [c.strip() for c in body[name].strip().strip("|").split("|")][fid_col]
        assert float(cell) == pytest.approx(_rows(report)["fid"]["value"], rel=1e-3)

    table = list(csv.DictReader(io.StringIO(report_mod.compare(runs, fmt="csv"))))
    assert [r["run"] for r in table] == ["vae-uncond", "vae-cond"]
    for r in table:
        assert float(r["fid"]) == pytest.approx(_rows(evaluated[r["run"]])["fid"]["value"])
    assert table[0]["conditional_accuracy"] == "" and 0 <= float(table[1]["conditional_accuracy"]) <= 1


def test_write_report_embeds_images_and_metrics(vae_runs, evaluated):
    run = Path(vae_runs["vae-cond"])
    out = report_mod.write_report(run)
    assert out == run / "report.html" and out.exists()
    page = out.read_text()
    marker = 'src="data:image/png;base64,'
    assert "<img" in page and marker in page
    payload = page.split(marker, 1)[1].split('"', 1)[0]
    assert base64.b64decode(payload, validate=True).startswith(b"\x89PNG")
    assert "<table>" in page and "<td>fid</td>" in page and "<td>conditional_accuracy</td>" in page
    assert "classifier:" in page
