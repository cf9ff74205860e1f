"""`genlab eval` for image runs: realism, diversity, controllability and novelty in the judge's feature space
(genlab.evaluation.judged), against the run's training split, with the real-vs-real floor."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from genlab.data.sources import split_images
from genlab.data.loader import eval_batches
from genlab.evaluation.judged import Judge, Reference, evaluate_judged
from genlab.kinds.image.judge import get_judge, load_judge
from genlab.loading import load, load_config
from genlab.prepare import needs_labels
from genlab.training.trainer import validate


def evaluate_run(run_dir: Path, *, n: int = 1000, seed: int = 0, judge: str | Path | Judge | None = None,
                 controls: dict | None = None, progress: bool = True, log=print) -> dict:
    """Score a run, write `eval.json` into it and return the report (rows of metric, value, N, judge, seed)."""
    t0 = time.time()
    cfg = load_config(run_dir)
    model = load(run_dir)
    ds, train, val = split_images(cfg.data)
    if not isinstance(judge, Judge):
        judge = load_judge(judge) if judge else get_judge(cfg.data, ds=ds, progress=progress, log=log)
    ref = Reference(train.images, val.images, val.labels, "images", train_labels=train.labels)
    return evaluate_judged(run_dir, cfg, model, judge, ref, _heldout(model, val, needs_labels(cfg)), n=n, seed=seed,
                           controls=controls, t0=t0, log=log)


@torch.no_grad()
def _heldout(model, val, labelled: bool) -> dict[str, float]:
    """The model's loss dict averaged over the held-out split (reconstruction error and ELBO for a VAE)."""
    dev = next(model.parameters()).device
    if not labelled:
        val = type(val)(val.images, None, [], val.name, val.source)
    return validate(model, lambda: eval_batches(val, 256, dev), seed=0)
