"""Evaluation in a judge's feature space, shared by the kinds whose judge genlab trains on the run's own data
(images: a CNN classifier or an autoencoder; audio: a CNN on log-mel spectrograms).

Reference set R = the run's training split. Samples S = n items from the run (balanced labels for conditional
runs). The real-vs-real floor compares the held-out split with R; because Fréchet distance, KID and coverage
depend on the sample count, the samples are also scored at the floor's N (docs/design.md).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from genlab.config import as_overrides
from genlab.evaluation import image_metrics as M
from genlab.runs import atomic_write, has_checkpoint, wait_for_writer
from genlab.training.run import train

# quality axis of each metric, for tables and model cards
AXES = {"fid": "realism", "fad": "realism", "fvd": "realism", "kid": "realism", "precision": "realism",
        "density": "realism", "inception_score": "realism", "recall": "diversity", "coverage": "diversity",
        "class_coverage": "diversity", "class_entropy": "diversity", "conditional_accuracy": "controllability",
        "memorisation": "novelty",
        # the video kind's rows (genlab.kinds.video.evaluate)
        "order_score": "realism", "temporal_change_w1": "realism", "plausible_motion": "realism",
        # the image-pairs kind's rows (genlab.kinds.imagepairs.evaluate)
        "l1": "fidelity", "psnr": "fidelity", "ssim": "fidelity", "fcn_score": "controllability"}
AXES.update({f"frame_{k}": AXES[k] for k in ("fid", "kid", "precision", "recall", "density", "coverage")})


@dataclass
class Judge:
    """A trained run whose features the metrics use: a classifier (a non-generative model with `features` and
    `predict`, so class metrics too) or an autoencoder (its `encode` codes; no class metrics)."""
    model: torch.nn.Module
    kind: str            # its family
    path: Path

    @property
    def has_classes(self) -> bool:
        return not self.model.generative

    @property
    def num_classes(self) -> int:
        return self.model.config.num_classes if self.has_classes else 0

    @torch.no_grad()
    def batched(self, fn, items: torch.Tensor, batch: int = 500) -> np.ndarray:
        """`fn` (one of the judge model's methods) over the items in batches on its device, as float64."""
        dev = next(self.model.parameters()).device
        return np.concatenate([fn(items[i:i + batch].to(dev)).double().cpu().numpy()
                               for i in range(0, len(items), batch)])

    def features(self, items: torch.Tensor, batch: int = 500) -> np.ndarray:
        """Items as the run's batches hold them ("x") -> (N, d) float64 features."""
        return self.batched(self.model.features if self.has_classes else self.model.encode, items, batch)

    def probs(self, items: torch.Tensor, batch: int = 500) -> np.ndarray:
        """(N, num_classes) class probabilities (classifier judges only)."""
        return self.batched(self.model.predict, items, batch)

    def describe(self) -> dict:
        info = json.loads((self.path / "checkpoint.json").read_text())
        c = self.model.config
        return {"kind": self.kind, "path": str(self.path), "steps": info.get("step"),
                "feature_dim": c.feature_dim if self.has_classes else c.latent_dim}

    def accuracy(self, items: torch.Tensor, labels: torch.Tensor | None) -> float | None:
        """Its accuracy on held-out items (how far its verdicts can be trusted)."""
        if not self.has_classes or labels is None:
            return None
        return float((self.probs(items).argmax(1) == labels.numpy()).mean())


def judge_key(fingerprint: str, data) -> str:
    """A cached judge's key: the data's fingerprint (its items and labels) plus the split settings."""
    split_cfg = json.dumps({"val_fraction": data.val_fraction, "seed": data.seed}, sort_keys=True)
    return hashlib.sha256((fingerprint + split_cfg).encode()).hexdigest()[:16]


def needs_training(path: Path, log) -> bool:
    """Whether the judge cached at `path` must be trained: not when it is there, nor once another genlab process
    that is training it (two evaluations of one new dataset at once) has finished it."""
    if not has_checkpoint(path):
        wait_for_writer(path, log)
    return not has_checkpoint(path)


def train_judge(family: str, data, path: Path, *, steps: int, batch_size: int, prepare, progress: bool,
                log) -> None:
    """Train a classifier judge `family` on `data` into the cache folder `path`, quietly (no previews or
    intermediate checkpoints), with the data settings of the run it judges."""
    log(f"training a {family} judge for {data.name} (cached in {path}) ...")
    overrides = as_overrides("data", data, skip=("name", "conditional"))
    overrides += [f"train.batch_size={batch_size}", "train.lr=2e-3", "train.val_every=400",
                  "train.sample_every=100000", "train.ckpt_every=100000", "train.log_every=100"]
    train(family, data=data.name, out=path, steps=steps, overrides=overrides, progress=progress, log=log,
          prepare=prepare)


def feature_metrics(real: np.ndarray, fake: np.ndarray, seed: int, distance: str = "fid",
                    radii: dict | None = None) -> dict[str, float]:
    """The Fréchet distance (named `distance`: fid for images, fad for audio), KID, precision/recall and
    density/coverage of fake vs real features. `radii`: M.real_radii(real), when one real set meets several fakes."""
    kid_mean, _ = M.kid(real, fake, seed=seed)
    radii = radii if radii is not None else M.real_radii(real)
    p, r = M.precision_recall(real, fake, radii=radii)
    d, c = M.density_coverage(real, fake, radii=radii)
    return {distance: M.fid(real, fake), "kid": kid_mean, "precision": p, "recall": r, "density": d, "coverage": c}


@torch.no_grad()
def generate(model, n: int, seed: int, batch: int = 250, **controls) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples in batches from one seeded generator; balanced labels 0..K-1 for conditional models."""
    k = getattr(model.config, "num_classes", 0)
    labels = torch.arange(n) % k if k else None
    g = torch.Generator().manual_seed(seed)
    out = [model.sample(len(range(i, min(n, i + batch))), cond=None if labels is None else labels[i:i + batch],
                        generator=g, **controls).cpu() for i in range(0, n, batch)]
    return torch.cat(out), labels


@dataclass
class Reference:
    """What a kind gives the judged evaluation: the real items (as batches hold them) and how to compare them."""
    train: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor | None
    what: str                                    # "images", "clips"
    distance: str = "fid"                        # the Fréchet distance's name in the rows
    distance_note: str = ""
    copy_space: Callable[[torch.Tensor], torch.Tensor] = lambda x: x.flatten(1)   # where near-copies are sought
    copy_note: str = ("pixel-space near-copies only (nearest training image closer than 1/3 of its own NN "
                      "distance)")
    train_labels: torch.Tensor | None = None     # labelled data: per-class coverage
    extra: Callable | None = None                # (samples, labels, add) -> None: the kind's own rows (video:
                                                 # temporal consistency, per-frame metrics), add as below


def equal_per_class(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Indices into labels `a` and `b` taking, of every class in `a`, the first min(count in a, count in b) of each
    (a class `b` lacks is left out)."""
    ia, ib = [], []
    for c in a.unique().tolist():
        in_a, in_b = (a == c).nonzero().flatten(), (b == c).nonzero().flatten()
        m = min(len(in_a), len(in_b))
        ia.append(in_a[:m])
        ib.append(in_b[:m])
    return torch.cat(ia).numpy(), torch.cat(ib).numpy()


def eval_row(metric: str, value, *, n_samples: int | None, n_reference: int | None, judge: str, seed: int,
             note: str = "", floor: float | None = None) -> dict:
    """One row of eval.json: the metric, its value (None: unavailable), its axis, N, the judge and the seed."""
    return {"metric": metric, "value": None if value is None else float(value),
            "axis": AXES.get(metric.split("@")[0], ""), "n_samples": n_samples, "n_reference": n_reference, "judge": judge, "seed": seed, "note": note,
            **({} if floor is None else {"floor": floor})}


def evaluate_judged(run_dir: Path, cfg, model, judge: Judge, ref: Reference, heldout: dict[str, float], *,
                    n: int, seed: int, controls: dict | None, t0: float, log=lambda message: None) -> dict:
    """Score a run's samples in `judge`'s features against `ref`, write eval.json into the run and return it.
    `heldout`: the model's own loss terms on the held-out split, reported first. `log` gets a line per stage with
    the seconds since t0 (on 60,000 training images the stages take minutes)."""
    judge_id = f"{judge.kind}:{judge.path.name}"
    rows: list[dict] = []

    def add(metric: str, value, n_samples: int | None, n_ref: int | None = None, note: str = "",
            floor: float | None = None) -> None:
        rows.append(eval_row(metric, value, n_samples=n_samples, n_reference=n_ref, judge=judge_id, seed=seed,
                             note=note, floor=floor))

    for key, value in heldout.items():
        add(f"heldout_{key}", value, len(ref.val), note="the model's own loss terms on the held-out split")
    floor: dict = {}
    n_floor = len(ref.val)
    if model.generative:
        samples, labels = generate(model, n, seed, **(controls or {}))
        log(f"eval: {n} samples drawn ({time.time() - t0:.0f} s); judge features of them and of "
            f"{len(ref.train)} training and {len(ref.val)} held-out {ref.what}")
        real, fake, held = judge.features(ref.train), judge.features(samples), judge.features(ref.val)
        log(f"eval: features done ({time.time() - t0:.0f} s); k-NN radii of the {len(real)} training {ref.what}")
        radii = M.real_radii(real)  # the real set's k-NN radii, once for the three comparisons below
        log(f"eval: radii done ({time.time() - t0:.0f} s); metrics, the floor, class coverage, memorisation")
        for key, value in feature_metrics(real, fake, seed, ref.distance, radii).items():
            add(key, value, n, len(real), note=ref.distance_note if key == ref.distance else "")
        n_floor = min(len(held), n)  # equal N on both sides, also when n < the held-out count
        floor = feature_metrics(real, held[:n_floor], seed, ref.distance, radii)
        for key, value in feature_metrics(real, fake[:n_floor], seed, ref.distance, radii).items():
            add(f"{key}@floor_n", value, n_floor, len(real), note="samples scored at the floor's sample count")
        if labels is not None and ref.train_labels is not None and ref.val_labels is not None:
            fake_at, held_at = equal_per_class(labels, ref.val_labels)
            add("class_coverage", M.class_coverage(real, ref.train_labels, fake[fake_at], labels[fake_at]),
                len(fake_at), len(real), note="coverage within each class (samples of label c against the training "
                "items of c), at the held-out split's per-class count",
                floor=M.class_coverage(real, ref.train_labels, held[held_at], ref.val_labels[held_at]))
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
        add("memorisation", M.memorisation_fraction(ref.copy_space(samples), ref.copy_space(ref.train)), n,
            len(ref.train), note=ref.copy_note)
        if ref.extra is not None:
            ref.extra(samples, labels, add)
    report = {
        "run": str(run_dir), "family": cfg.family, "data": cfg.data.name, "seed": seed, "n_samples": n,
        "judge": {**judge.describe(), "id": judge_id, "heldout_accuracy": judge.accuracy(ref.val, ref.val_labels)},
        "controls": controls or {}, "rows": rows,
        "floor": {"n_samples": n_floor, "n_reference": len(ref.train), **floor,
                  "what": f"held-out real {ref.what} vs the training split, in the same judge's feature space"},
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write(run_dir / "eval.json", json.dumps(report, indent=2))
    return report
