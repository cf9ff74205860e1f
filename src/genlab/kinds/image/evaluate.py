"""`genlab eval` for image runs: realism, diversity, controllability and novelty in the judge's feature space.

Reference set R = the run's training split. Samples S = n images from the run (balanced labels for
conditional runs). The real-vs-real floor compares the held-out split with R; because FID, KID and
coverage depend on the sample count, the samples are also scored at the floor's N (docs/design.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from genlab.data import load_images, split
from genlab.data.loader import eval_batches
from genlab.evaluation import image_metrics as M
from genlab.kinds.image.judge import Judge, get_judge, heldout_accuracy, load_judge
from genlab.loading import load, load_config
from genlab.prepare import needs_labels
from genlab.runs import atomic_write
from genlab.training.trainer import validate

# quality axis of each metric, for tables and model cards
AXES = {"fid": "realism", "kid": "realism", "precision": "realism", "density": "realism",
        "inception_score": "realism", "recall": "diversity", "coverage": "diversity",
        "class_entropy": "diversity", "conditional_accuracy": "controllability",
        "memorisation": "novelty"}


def feature_metrics(real: np.ndarray, fake: np.ndarray, seed: int) -> dict[str, float]:
    """FID, KID, precision/recall, density/coverage of fake vs real features."""
    kid_mean, _ = M.kid(real, fake, seed=seed)
    p, r = M.precision_recall(real, fake)
    d, c = M.density_coverage(real, fake)
    return {"fid": M.fid(real, fake), "kid": kid_mean, "precision": p, "recall": r, "density": d, "coverage": c}


@torch.no_grad()
def generate(model, n: int, seed: int, batch: int = 250, **controls) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples in batches from one seeded generator; balanced labels 0..K-1 for conditional models."""
    k = getattr(model.config, "num_classes", 0)
    labels = torch.arange(n) % k if k else None
    g = torch.Generator().manual_seed(seed)
    out = [model.sample(len(range(i, min(n, i + batch))), cond=None if labels is None else labels[i:i + batch],
                        generator=g, **controls).cpu() for i in range(0, n, batch)]
    return torch.cat(out), labels


def evaluate_run(run_dir: Path, *, n: int = 1000, seed: int = 0, judge: str | Path | Judge | None = None,
                 controls: dict | None = None, progress: bool = True, log=print) -> dict:
    """Score a run, write `eval.json` into it and return the report (rows of metric, value, N, judge, seed)."""
    t0 = time.time()
    cfg = load_config(run_dir)
    model = load(run_dir)
    ds = load_images(cfg.data)
    train, val = split(ds, cfg.data.val_fraction, cfg.data.seed)
    if not isinstance(judge, Judge):
        judge = load_judge(judge) if judge else get_judge(cfg.data, ds=ds, progress=progress, log=log)
    judge_id = f"{judge.kind}:{judge.path.name}"
    rows: list[dict] = []

    def add(metric: str, value, n_samples: int | None, n_ref: int | None = None, note: str = "") -> None:
        rows.append({"metric": metric, "value": None if value is None else float(value), "axis": AXES.get(metric.split("@")[0], ""),
                     "n_samples": n_samples, "n_reference": n_ref, "judge": judge_id, "seed": seed, "note": note})

    model_held = _heldout(model, val, needs_labels(cfg))
    for key, value in model_held.items():
        add(f"heldout_{key}", value, len(val), note="the model's own loss terms on the held-out split")
    floor: dict = {}
    n_floor = len(val)
    if model.generative:
        samples, labels = generate(model, n, seed, **(controls or {}))
        real = judge.features(train.images)
        fake = judge.features(samples)
        for key, value in feature_metrics(real, fake, seed).items():
            add(key, value, n, len(real))
        held = judge.features(val.images)
        n_floor = min(len(held), n)  # equal N on both sides, also when n < the held-out count
        floor = feature_metrics(real, held[:n_floor], seed)
        for key, value in feature_metrics(real, fake[:n_floor], seed).items():
            add(f"{key}@floor_n", value, n_floor, len(real), note="samples scored at the floor's sample count")
        if judge.has_classes:
            probs = judge.probs(samples)
            pred = probs.argmax(1)
            add("inception_score", M.inception_score(probs)[0], n, note="judge's classes, not Inception-v3")
            add("class_entropy", M.normalised_class_entropy(pred, judge.num_classes), n,
                note="entropy of predicted classes / log(K); 1 = every class equally often")
            if labels is not None:
                add("conditional_accuracy", M.conditional_accuracy(pred, labels.numpy()), n,
                    note="share of samples the judge assigns to the requested label")
        else:
            for metric in ("inception_score", "class_entropy"):
                add(metric, None, n, note="unavailable: the data has no labels, so the judge is an autoencoder")
        add("memorisation", M.memorisation_fraction(samples.flatten(1), train.images.flatten(1)), n, len(train),
            note="pixel-space near-copies only (nearest training image closer than 1/3 of its own NN distance)")
    report = {
        "run": str(run_dir), "family": cfg.family, "data": cfg.data.name, "seed": seed, "n_samples": n,
        "judge": {**judge.describe(), "id": judge_id, "heldout_accuracy": heldout_accuracy(judge, val)},
        "controls": controls or {}, "rows": rows,
        "floor": {"n_samples": n_floor, "n_reference": len(train), **floor,
                  "what": "held-out real images vs the training split, in the same judge's feature space"},
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write(run_dir / "eval.json", json.dumps(report, indent=2))
    return report


@torch.no_grad()
def _heldout(model, val, labelled: bool) -> dict[str, float]:
    """The model's loss dict averaged over the held-out split (reconstruction error and ELBO for a VAE)."""
    dev = next(model.parameters()).device
    if not labelled:
        val = type(val)(val.images, None, [], val.name, val.source)
    return validate(model, lambda: eval_batches(val, 256, dev), seed=0)
