"""`genlab augment`: does generated data help a classifier? The protocol of Ravuri & Vinyals (2019, Classification
Accuracy Score), Azizi et al. (2023) and He et al. (2023), run on any labelled image dataset genlab reads.

For each n real training images per class and each seed:
- the real subset is drawn from the training split (the held-out split is the test set, the same for every cell);
- a class-conditional generator of each family trains on that subset only (a genlab run under generators/),
  then k_max x n images per class are sampled from it (synthetic/);
- the same small classifier trains for a fixed step budget on: real only; synthetic only (its test accuracy is
  the CAS); real + synthetic; real + classic augmentation; real + classic + synthetic; and, where the training
  split has enough, real images of the same total size (the upper bound);
- every classifier is scored on the held-out split, which no generator and no classifier ever trains on.

Each finished cell is written to results.json at once, so a killed experiment continues where it stopped.
The family "noise" is a deliberately useless generator (uniform noise with labels): the control that shows
the protocol can measure harm. The generators are scored too (judge-FID, precision, recall of the synthetic
images against the test set, in the features of the dataset's judge), so the table shows whether those metrics
predict usefulness.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property, partial
from pathlib import Path

import torch

from genlab import registry
from genlab.config import DataConfig
from genlab.data import ImageDataset
from genlab.data.classic import AugmentedLoader, check_ops, merged
from genlab.data.loader import BatchLoader, eval_batches
from genlab.data.readers import read_npz
from genlab.data.sources import few_per_class, split_images
from genlab.errors import ConfigError, UsageError
from genlab.evaluation.judged import feature_metrics
from genlab.imageio import save_npz
from genlab.kinds.image.augment_report import write_report
from genlab.kinds.image.judge import get_judge
from genlab.kinds.image.prepare import prepare_images
from genlab.loading import load
from genlab.runs import atomic_write, has_checkpoint
from genlab.training.run import build_config, train
from genlab.training.trainer import fit

NOISE = "noise"
CONDITIONS = ("real", "real+classic", "synthetic", "real+synthetic", "real+classic+synthetic", "real (same total)")
SYNTHETIC = ("synthetic", "real+synthetic", "real+classic+synthetic")   # one cell per family and k
RESULTS = "results.json"


@dataclass
class Plan:
    data: str = "digits"
    families: list[str] = field(default_factory=lambda: ["ddpm"])   # conditional image generators, or "noise"
    per_class: list[int] = field(default_factory=lambda: [10, 50, 0])   # real images per class; 0 = all
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    k: list[int] = field(default_factory=lambda: [1, 4])    # synthetic images per real one
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    classic: list[str] = field(default_factory=lambda: ["shift", "crop", "noise"])
    image_size: int = 0
    gen_preset: str = "tiny"
    gen_steps: int = 1500
    gen_set: list[str] = field(default_factory=list)   # --set overrides for every generator, family:key=value
    sample_controls: dict = field(default_factory=dict)  # e.g. {"steps": 20} (DDIM steps)
    clf_preset: str = "small"
    clf_steps: int = 500
    eval_n: int = 0                  # synthetic images per generator scored by the judge; 0 = the test set's size
    threads: int = 0

    def check(self) -> None:
        for name in self.families:
            if name != NOISE and name not in self._generators():
                raise ConfigError(f"augment --families {name}: expected conditional image generators "
                                  f"({', '.join(self._generators())}) or {NOISE}")
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad or not self.conditions:
            raise ConfigError(f"augment --conditions {','.join(bad)}: expected some of {', '.join(CONDITIONS)}")
        if any(n < 0 for n in self.per_class) or any(k < 1 for k in self.k) or not self.seeds:
            raise ConfigError("augment: expected --per-class counts >= 0 (0 = all), --k factors >= 1, and seeds")
        check_ops(self.classic)

    @staticmethod
    def _generators() -> list[str]:
        return [f for f in registry.families_of("image", generative=True)
                if hasattr(registry.get(f).config_cls(), "num_classes")]


def real_sets(plan: Plan) -> tuple[ImageDataset, ImageDataset]:
    """The training split and the held-out test split, as every generator run and classifier sees them."""
    _, train_split, test = split_images(DataConfig(name=plan.data, image_size=plan.image_size, conditional=True))
    if train_split.labels is None or train_split.num_classes < 2:
        raise UsageError(f"genlab augment needs labelled images with at least 2 classes; {plan.data} has none")
    return train_split, test


def real_subset(train_split: ImageDataset, n: int, seed: int) -> ImageDataset:
    """n images per class drawn with `seed` (all when n is 0): what a generator run with data.per_class=n,
    data.per_class_seed=seed trains on."""
    return few_per_class(train_split, n, seed) if n else train_split


class Experiment:
    def __init__(self, plan: Plan, out: str | Path, *, log=print, progress: bool = True):
        plan.check()
        self.plan, self.out, self.log, self.progress = plan, Path(out), log, progress
        self.out.mkdir(parents=True, exist_ok=True)
        self.results = self._load()
        self.train_split, self.test = real_sets(plan)

    def _load(self) -> dict:
        path = self.out / RESULTS
        plan = json.loads(json.dumps(asdict(self.plan)))
        if not path.exists():
            return {"plan": plan, "cells": {}, "generators": {}}
        doc = json.loads(path.read_text())
        if doc.get("plan") != plan:
            raise UsageError(f"{path} was written by another plan; expected the same options to continue it "
                             f"(it has {json.dumps(doc.get('plan'))}), or another --out")
        return doc

    def _save(self) -> None:
        atomic_write(self.out / RESULTS, json.dumps(self.results, indent=1))

    # ---- generators ------------------------------------------------------------------------------
    def synthetic(self, family: str, n: int, seed: int, real: ImageDataset) -> ImageDataset:
        """k_max images per real one of each class from the family's generator trained on `real` (cached)."""
        path = self.out / "synthetic" / f"{family}-n{n}-s{seed}.npz"
        if path.exists():
            return read_npz(path)
        counts = torch.bincount(real.labels, minlength=real.num_classes) * max(self.plan.k)
        labels = torch.repeat_interleave(torch.arange(real.num_classes), counts)
        g = torch.Generator().manual_seed(seed)
        if family == NOISE:
            images = torch.rand(len(labels), *real.images.shape[1:], generator=g) * 2 - 1
            scored = {}
        else:
            run = self._train_generator(family, n, seed, len(real))
            model = load(run)
            own = {c.name for c in model.CONTROLS}   # e.g. steps: only the families that have them
            controls = {k: v for k, v in self.plan.sample_controls.items() if k in own}
            images = torch.cat([model.sample(len(y), cond=y, generator=g, **controls).cpu()
                                for y in labels.split(500)])
            scored = {"run": str(run)}
        scored.update(self._score(images, labels))
        self.results["generators"][f"{family}/n{n}/s{seed}"] = scored
        self._save()
        save_npz(path, images, labels, real.classes,
                 metadata={"genlab:augment": f"{family} n={n} seed={seed}", "DigitalSourceType": "trainedAlgorithmicMedia"})
        return read_npz(path)   # as the classifier will see it on a continued run: quantised to uint8

    def _train_generator(self, family: str, n: int, seed: int, count: int) -> Path:
        run = self.out / "generators" / f"{family}-n{n}-s{seed}"
        p = self.plan
        own = [o.split(":", 1)[1] for o in p.gen_set if o.split(":", 1)[0] == family]
        overrides = [f"data.per_class={n}", f"data.per_class_seed={seed}", f"data.image_size={p.image_size}",
                     f"train.seed={seed}", "train.sample_every=1000000000", f"train.threads={p.threads}", *own]
        cfg = build_config(family, data=p.data, preset=p.gen_preset, overrides=overrides, steps=p.gen_steps,
                           conditional=True)
        if cfg.train.batch_size > count:
            overrides.append(f"train.batch_size={count}")
        if has_checkpoint(run):
            self.log(f"generator {run}: continuing")
            train(family, resume=run, progress=self.progress, log=self.log, prepare=prepare_images)
        else:
            self.log(f"generator {family}, {n or 'all'} per class, seed {seed}: training {p.gen_steps} steps into {run}")
            train(family, p.data, out=run, preset=p.gen_preset, overrides=overrides, steps=p.gen_steps,
                  conditional=True, progress=self.progress, log=self.log, prepare=prepare_images)
        return run

    def _score(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Judge-FID, precision and recall of (a class-balanced slice of) the synthetic images against the test set."""
        n = self.plan.eval_n or len(self.test)
        order = torch.argsort(_rank_within(labels) * (int(labels.max()) + 1) + labels)[:n]  # classes in turn
        m = feature_metrics(self._test_features, self._judge.features(images[order]), seed=0)
        return {"fid": m["fid"], "precision": m["precision"], "recall": m["recall"], "scored": len(order)}

    @cached_property
    def _judge(self):
        """The dataset's judge (trained once and cached, as `genlab eval` does), loaded once per experiment."""
        return get_judge(DataConfig(name=self.plan.data, image_size=self.plan.image_size), progress=self.progress,
                         log=self.log)

    @cached_property
    def _test_features(self):
        return self._judge.features(self.test.images)

    # ---- classifiers -----------------------------------------------------------------------------
    def run(self) -> dict:
        p = self.plan
        cells = list(self._cells())
        todo = [c for c in cells if c[0] not in self.results["cells"]]
        self.log(f"augment: {len(cells)} classifier cells, {len(cells) - len(todo)} already done; results in "
                 f"{self.out / RESULTS}")
        for i, (key, n, seed, condition, family, k) in enumerate(todo, 1):
            t0 = time.perf_counter()
            train_set, ops, note = self._train_set(n, seed, condition, family, k)
            if train_set is None:
                cell = {"skipped": note}
            else:
                cell = {"accuracy": fit_classifier(p, train_set, ops, seed, self.test), "train_images": len(train_set)}
            self.results["cells"][key] = {"n": n, "seed": seed, "condition": condition, "family": family, "k": k,
                                          **cell}
            self._save()
            shown = f"{cell['accuracy']:.3f}" if "accuracy" in cell else cell["skipped"]
            self.log(f"[{len(cells) - len(todo) + i}/{len(cells)}] n={n or 'all'} seed {seed} {condition}"
                     f"{f' ({family}, k={k})' if family else (f' (k={k})' if k else '')}: {shown} "
                     f"({time.perf_counter() - t0:.1f} s)")
        write_report(self.results, self.out)
        return self.results

    def _cells(self):
        p = self.plan
        for n in p.per_class:
            for seed in p.seeds:
                for condition in p.conditions:
                    if condition in SYNTHETIC:
                        for family in p.families:
                            for k in p.k:
                                yield f"n{n}/s{seed}/{condition}/{family}/k{k}", n, seed, condition, family, k
                    elif condition == "real (same total)":
                        for k in p.k:
                            yield f"n{n}/s{seed}/{condition}/k{k}", n, seed, condition, "", k
                    else:
                        yield f"n{n}/s{seed}/{condition}", n, seed, condition, "", 0

    def _train_set(self, n: int, seed: int, condition: str, family: str, k: int):
        """(images to train on, classic ops or None, why skipped)."""
        real = real_subset(self.train_split, n, seed)
        ops = self.plan.classic if "classic" in condition else None
        if condition == "real (same total)":
            if n == 0:
                return None, None, "n/a (all real images are used already)"
            have = int(torch.bincount(self.train_split.labels).min())
            if have < (1 + k) * n:
                return None, None, f"n/a ({have} per class in the training split, {(1 + k) * n} needed)"
            return real_subset(self.train_split, (1 + k) * n, seed), None, ""
        if condition in SYNTHETIC:
            synth = self.synthetic(family, n, seed, real)
            synth = synth.subset(_first_per_class(synth.labels, torch.bincount(real.labels) * k))
            return (synth if condition == "synthetic" else merged(real, synth)), ops, ""
        return real, ops, ""


def _rank_within(labels: torch.Tensor) -> torch.Tensor:
    """Each item's index among the items of its label (0, 1, ... per class, in order)."""
    out = torch.zeros_like(labels)
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        out[idx] = torch.arange(len(idx))
    return out


def _first_per_class(labels: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The indices of the first counts[c] items of each class c."""
    return (_rank_within(labels) < counts[labels]).nonzero().flatten()


def fit_classifier(plan: Plan, ds: ImageDataset, ops: list[str] | None, seed: int, test: ImageDataset) -> float:
    """Test accuracy of genlab's classifier trained for plan.clf_steps on `ds` (with classic augmentation `ops`).
    Its validation batches come from its own training images: the test set is only ever scored."""
    cfg = build_config("classifier", data=plan.data, preset=plan.clf_preset,
                       overrides=[f"train.seed={seed}", "train.val_every=1000000000", "train.ckpt_every=1000000000",
                                  "train.log_every=1000000000", f"train.threads={plan.threads}"],
                       steps=plan.clf_steps)
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = ds.channels, ds.image_size, ds.num_classes
    cfg.train.batch_size = min(cfg.train.batch_size, len(ds))
    loader = partial(AugmentedLoader, ops=ops) if ops else BatchLoader
    make = partial(loader, ds, cfg.train.batch_size, seed)
    torch.manual_seed(seed)
    model = registry.build("classifier", cfg.model)
    tmp = Path(tempfile.mkdtemp(prefix="genlab-augment-"))
    try:
        fit(cfg, model, make, lambda device: eval_batches(ds, 256, device, limit=256), tmp, progress=False,
            log=lambda _: None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model.predict(x).argmax(1) for x in test.images.split(512)])
    return (pred == test.labels).float().mean().item()


__all__ = ["Plan", "Experiment", "CONDITIONS", "NOISE", "real_sets", "real_subset", "fit_classifier"]
