"""`genlab eval` for image-pair runs: the translations of the held-out inputs against their targets (L1, PSNR,
SSIM), and as images in the features of a judge trained on the training targets (judge-FID, KID, precision,
recall, density, coverage against the training targets, beside the held-out targets' own floor), the judge's
accuracy on them (pix2pix's "FCN-score" idea, with genlab's judge: do the outputs read as their input's class?)
and near-copies of training targets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from genlab.config import DataConfig
from genlab.data.fetch import cache_root
from genlab.data.image_pairs import split_pairs
from genlab.evaluation import image_metrics as M
from genlab.evaluation.judged import Judge, eval_row, feature_metrics, judge_key
from genlab.imageio import save_npz
from genlab.kinds.image.judge import get_judge, load_judge
from genlab.loading import load, load_config
from genlab.runs import atomic_write

def target_judge(data: DataConfig, train, *, cache_dir=None, progress: bool = True, log=print) -> Judge:
    """The image judge of the targets: a classifier (labelled pairs) or an autoencoder trained on the training
    split's targets, written once as an .npz image dataset in the cache, through genlab.kinds.image.judge."""
    folder = cache_root(cache_dir) / "judges"
    targets = folder / f"targets-{judge_key(train.fingerprint(), data)}.npz"
    if not targets.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        save_npz(targets, train.b, train.labels, train.classes or None)
    return get_judge(DataConfig(name=str(targets), val_fraction=data.val_fraction, seed=data.seed),
                     cache_dir=cache_dir, progress=progress, log=log)


@torch.no_grad()
def translate_all(model, a: torch.Tensor, seed: int, controls: dict, batch: int = 250) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    return torch.cat([model.sample(len(x), cond=x.to(dev), generator=g, **controls).cpu() for x in a.split(batch)])


def evaluate_pairs_run(run_dir: Path, *, n: int = 1000, seed: int = 0, judge: str | Path | Judge | None = None,
                       controls: dict | None = None, progress: bool = True, log=print) -> dict:
    """Score a run's translations of (up to n) held-out inputs; write eval.json and return the report."""
    t0 = time.time()
    cfg = load_config(run_dir)
    model = load(run_dir)
    _, train, val = split_pairs(cfg.data)
    held = val.subset(torch.arange(min(n, len(val))))
    if not isinstance(judge, Judge):
        judge = load_judge(judge) if judge else target_judge(cfg.data, train, progress=progress, log=log)
    judge_id = f"{judge.kind}:{judge.path.name}"
    outputs = translate_all(model, held.a, seed, controls or {})
    rows: list[dict] = []

    def add(metric, value, note="", floor=None, n_ref=None):
        rows.append(eval_row(metric, value, n_samples=len(held), n_reference=n_ref, judge=judge_id, seed=seed,
                             note=note, floor=floor))

    add("l1", M.l1_per_image(outputs, held.b).mean(), "mean |output - target| per pixel, in [0, 1] units; lower is "
        "closer")
    add("psnr", M.psnr_per_image(outputs, held.b).mean(), "dB, data range 1; higher is closer")
    add("ssim", M.ssim_per_image(outputs, held.b).mean(), "structural similarity to the target (7x7 Gaussian window)")
    real, fake, targets = judge.features(train.b), judge.features(outputs), judge.features(held.b)
    radii = M.real_radii(real)
    floor = feature_metrics(real, targets, seed, radii=radii)
    for key, value in feature_metrics(real, fake, seed, radii=radii).items():
        add(key, value, "outputs vs the training targets; the floor: the held-out targets themselves", floor[key],
            len(real))
    if judge.has_classes and held.labels is not None:
        pred = judge.probs(outputs).argmax(1)
        truth = judge.probs(held.b).argmax(1)
        add("fcn_score", M.conditional_accuracy(pred, held.labels.numpy()),
            "share of outputs the judge assigns to their pair's class (the floor: the targets' own share)",
            M.conditional_accuracy(truth, held.labels.numpy()))
    else:
        add("fcn_score", None, "unavailable: the pairs have no labels, so the judge is an autoencoder")
    add("memorisation", M.memorisation_fraction(outputs.flatten(1), train.b.flatten(1)),
        "outputs that are near-copies of a training target (pixel space)", n_ref=len(train))
    report = {"run": str(run_dir), "family": cfg.family, "data": cfg.data.name, "seed": seed, "n_samples": len(held),
              "judge": {**judge.describe(), "id": judge_id}, "controls": controls or {}, "rows": rows,
              "floor": {"n_samples": len(held), "n_reference": len(real), **floor,
                        "what": "held-out targets vs the training targets, in the same judge's feature space"},
              "seconds": round(time.time() - t0, 1)}
    atomic_write(run_dir / "eval.json", json.dumps(report, indent=2))
    return report
