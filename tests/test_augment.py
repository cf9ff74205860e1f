"""`genlab augment` (genlab.augment): classic augmentation ops, the protocol's data discipline (no test image ever
trains a generator or a classifier), resuming a killed experiment, and the useless generator's harm showing in the
experiment's own output."""

import json

import pytest
import torch

import genlab.kinds.image.augment as A
from genlab import kinds
from genlab.cli import main
from genlab.data.classic import augment, check_ops
from genlab.errors import DataError, UsageError
from genlab.loading import load_config


def rows(images: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in images.flatten(1)}


# ---- classic augmentation ---------------------------------------------------------------------------

def test_classic_ops_are_what_they_say():
    x = -torch.ones(6, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0   # a bright square in the middle
    g = lambda: torch.Generator().manual_seed(3)
    assert torch.equal(augment(x, ["shift", "crop", "noise"], g()), augment(x, ["shift", "crop", "noise"], g()))
    shifted = augment(x, ["shift"], g())
    moved = [(s + 1).nonzero()[:, 1:].float().mean(0) for s in shifted]
    assert any((m - torch.tensor([7.5, 7.5])).abs().max() > 0.5 for m in moved), "shift moved nothing"
    assert shifted.min() >= -1 and shifted.max() <= 1
    mass = lambda im: (im + 1).flatten(1).sum(1)  # noqa: E731 - the square's brightness
    zoomed = augment(x, ["crop"], g())   # a zoom in: the square grows by 1/scale^2 (scale 0.8-1)
    assert (mass(zoomed) > mass(x) * 0.99).all() and (mass(zoomed) < mass(x) / 0.8**2 * 1.01).all()
    assert (mass(zoomed) > mass(x) * 1.05).any()
    noisy = augment(x, ["noise"], g())
    assert 0.1 < (noisy - x).std() < 0.3 and noisy.abs().max() <= 1   # sigma 0.2 in [-1, 1] units, clipped
    y = torch.arange(16.0).view(1, 1, 1, 16).expand(8, 1, 16, 16)
    flipped = augment(y, ["flip"], g())
    mirrored = [torch.equal(f, y[0].flip(-1)) for f in flipped]
    assert any(mirrored) and not all(mirrored)
    assert all(m or torch.equal(f, y[0]) for m, f in zip(mirrored, flipped))
    with pytest.raises(DataError, match="expected a list of shift, crop, noise, flip"):
        check_ops(["rotate"])


# ---- the protocol ---------------------------------------------------------------------------------

def fake_fit(calls: list, fail_at: int | None = None):
    """A stand-in classifier training that records each cell's training set (and can die mid-experiment)."""
    def fit(plan, ds, ops, seed, test):
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        calls.append((ds, ops, seed, test))
        return 0.5 + 0.01 * len(calls)
    return fit


@pytest.fixture(scope="module")
def vae_experiment(tmp_path_factory):
    """A tiny experiment with a real VAE generator; classifier cells recorded, not trained."""
    out = tmp_path_factory.mktemp("augment") / "exp"
    plan = A.Plan(families=["vae"], per_class=[5], seeds=[1], k=[2], gen_steps=30, gen_preset="tiny", eval_n=100,
                  threads=1)
    calls = []
    mp = pytest.MonkeyPatch()
    mp.setattr(A, "fit_classifier", fake_fit(calls))
    try:
        results = A.Experiment(plan, out, progress=False, log=lambda _: None).run()
    finally:
        mp.undo()
    return plan, out, results, calls


def test_no_test_image_trains_a_generator_or_a_classifier(vae_experiment):
    plan, out, results, calls = vae_experiment
    train_split, test = A.real_sets(plan)
    test_only = rows(test.images) - rows(train_split.images)   # the digits hold a few exact duplicates
    assert len(test_only) > 100, "the check needs test images to look for"
    subset = A.real_subset(train_split, 5, 1)
    assert torch.bincount(subset.labels).tolist() == [5] * 10
    # the generator's own training data, as its run prepares it
    run = out / "generators" / "vae-n5-s1"
    cfg = load_config(run)
    loader = kinds.prepare(cfg, run, resume=True).make_loader(rank=0, world=1, device=torch.device("cpu"))
    assert rows(loader.ds.images) == rows(subset.images)
    # every classifier: scored on the test split, trained on no test image
    conditions = {c["condition"] for c in results["cells"].values() if "accuracy" in c}
    assert conditions == set(A.CONDITIONS)
    assert len(calls) == len([c for c in results["cells"].values() if "accuracy" in c])
    for ds, ops, seed, t in calls:
        assert torch.equal(t.images, test.images) and seed == 1
        assert not rows(ds.images) & test_only
    real_only = [ds for ds, ops, *_ in calls if len(ds) == 50]
    assert real_only and all(rows(ds.images) == rows(subset.images) for ds in real_only)
    assert {tuple(ops or ()) for _, ops, *_ in calls} == {(), tuple(plan.classic)}


def test_cells_train_on_what_they_name(vae_experiment):
    plan, out, results, calls = vae_experiment
    sizes = sorted(len(ds) for ds, *_ in calls)
    # real 50, real+classic 50, synthetic 100 (k=2), real+synthetic 150 (twice, with and without classic),
    # real of the same total size 150
    assert sizes == [50, 50, 100, 150, 150, 150]
    synth = results["generators"]["vae/n5/s1"]
    assert synth["scored"] == 100 and synth["fid"] > 0 and 0 <= synth["precision"] <= 1
    table = (out / "table.md").read_text()
    assert "| 5 | synthetic | vae | 2 |" in table and "| 5 | real |" in table
    assert (out / "accuracy_vs_n.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "table.csv").read_text().splitlines()[0].startswith("n per class,condition,generator,k,accuracy")


@pytest.mark.slow
def test_a_killed_experiment_continues_without_redoing_cells(tmp_path, monkeypatch):
    plan = A.Plan(families=["noise"], per_class=[5, 10], seeds=[0], k=[1], eval_n=50,
                  conditions=["real", "synthetic", "real+synthetic"], threads=1)
    first: list = []
    monkeypatch.setattr(A, "fit_classifier", fake_fit(first, fail_at=4))
    with pytest.raises(KeyboardInterrupt):
        A.Experiment(plan, tmp_path, progress=False, log=lambda _: None).run()
    done = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert len(done) == 4 and len(first) == 4
    second: list = []
    monkeypatch.setattr(A, "fit_classifier", fake_fit(second))
    results = A.Experiment(plan, tmp_path, progress=False, log=lambda _: None).run()
    assert len(second) == 2 and len(results["cells"]) == 6
    assert all(results["cells"][k] == v for k, v in done.items())   # the finished cells were kept as they were
    other = A.Plan(**{**plan.__dict__, "k": [2]})
    with pytest.raises(UsageError, match="written by another plan"):
        A.Experiment(other, tmp_path, progress=False, log=lambda _: None)


def test_a_useless_generator_lowers_accuracy_in_the_experiments_own_output(tmp_path, capsys):
    out = tmp_path / "noise"
    code = main(["augment", "--out", str(out), "--families", "noise", "--per-class", "10", "--seeds", "0",
                 "--k", "10", "--conditions", "real,real+synthetic", "--clf-steps", "300", "--threads", "1",
                 "--no-progress"])
    assert code == 0
    cells = json.loads((out / "results.json").read_text())["cells"]
    real = cells["n10/s0/real"]["accuracy"]
    noisy = cells["n10/s0/real+synthetic/noise/k10"]["accuracy"]
    assert real > 0.8 and noisy < real - 0.03, (real, noisy)
    row = [line for line in (out / "table.md").read_text().splitlines() if "real+synthetic | noise" in line][0]
    assert "| -0." in row   # the gain over real-only is negative
    assert "wrote" in capsys.readouterr().out


def test_bad_plans_are_refused(tmp_path):
    with pytest.raises(Exception, match="expected conditional image generators"):
        A.Plan(families=["gpt"]).check()
    with pytest.raises(Exception, match="expected some of real"):
        A.Plan(conditions=["magic"]).check()
    assert main(["augment", "--out", str(tmp_path), "--data", "pycode", "--families", "noise", "--no-progress"]) == 1
