"""The domain judge: the feature extractor (and classifier) that image metrics are computed in.

There are no Inception-v3 weights offline, so genlab trains a judge on the run's own dataset and caches
it under `<cache>/judges/<dataset fingerprint>/`: a `classifier` (128-d post-ReLU features, class
probabilities) for labelled data, or an `ae` whose encoder codes serve as features for unlabelled data
(then Inception Score and class metrics are not available, and the output says so).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlab.config import DataConfig, to_dict
from genlab.data import ImageDataset, load_images
from genlab.data.fetch import cache_root
from genlab.errors import UsageError
from genlab.evaluation.image_metrics import normalised_class_entropy
from genlab.kinds.image.prepare import prepare_images
from genlab.loading import load
from genlab.runs import has_checkpoint
from genlab.training.run import train

JUDGE_STEPS = {"classifier": 1500, "ae": 1500}


@dataclass
class Judge:
    model: torch.nn.Module
    kind: str            # "classifier" or "ae"
    path: Path

    @property
    def has_classes(self) -> bool:
        return self.kind == "classifier"

    @property
    def num_classes(self) -> int:
        return self.model.config.num_classes if self.has_classes else 0

    @torch.no_grad()
    def _batched(self, fn, images: torch.Tensor, batch: int) -> np.ndarray:
        dev = next(self.model.parameters()).device
        return np.concatenate([fn(images[i:i + batch].to(dev)).double().cpu().numpy()
                               for i in range(0, len(images), batch)])

    def features(self, images: torch.Tensor, batch: int = 500) -> np.ndarray:
        """(N, C, H, W) in [-1, 1] -> (N, d) float64 features."""
        return self._batched(self.model.features if self.has_classes else self.model.encode, images, batch)

    def probs(self, images: torch.Tensor, batch: int = 500) -> np.ndarray:
        """(N, num_classes) class probabilities (classifier judges only)."""
        return self._batched(self.model.predict, images, batch)

    def describe(self) -> dict:
        info = json.loads((self.path / "checkpoint.json").read_text())
        return {"kind": self.kind, "path": str(self.path), "steps": info.get("step"),
                "feature_dim": self.model.config.feature_dim if self.has_classes else self.model.config.latent_dim}


def judge_key(ds: ImageDataset, data: DataConfig) -> str:
    """Cache key: the dataset's pixels and labels plus the split settings."""
    split_cfg = json.dumps({"val_fraction": data.val_fraction, "seed": data.seed}, sort_keys=True)
    return hashlib.sha256((ds.fingerprint() + split_cfg).encode()).hexdigest()[:16]


def load_judge(path: str | Path) -> Judge:
    """A judge from a run folder: a `classifier` run (any data of the same image shape) or an `ae` run."""
    model = load(path)
    if model.family not in ("classifier", "ae"):
        raise UsageError(f"--judge {path} is a {model.family} run; a judge must be a classifier or ae run")
    return Judge(model, model.family, Path(path))


def _cache_path(ds: ImageDataset, data: DataConfig, cache_dir) -> Path:
    kind = "classifier" if ds.labels is not None and ds.num_classes >= 2 else "ae"
    return cache_root(cache_dir) / "judges" / f"{judge_key(ds, data)}-{kind}"


def cached_judge(data: DataConfig, *, ds: ImageDataset | None = None,
                 cache_dir: str | Path | None = None) -> Judge | None:
    """The judge for this dataset if one is already cached (never trains one).
    `ds`: the images `data` describes, when the caller has them loaded already."""
    path = _cache_path(ds if ds is not None else load_images(data), data, cache_dir)
    return load_judge(path) if has_checkpoint(path) else None


def class_entropy_watch(data: DataConfig, ds: ImageDataset, collapse_entropy: float = 0.5):
    """A mode-collapse watch for training previews when a judge for this dataset is already cached (else None):
    the normalised entropy of the judge's class histogram over the preview's samples."""
    judge = cached_judge(data, ds=ds)
    if judge is None:
        return None

    def watch(images):
        entropy = normalised_class_entropy(judge.probs(images).argmax(1), judge.num_classes)
        warning = (f"the judge sees few classes in the samples (class entropy {entropy:.2f} of 1): mode collapse?"
                   if entropy < collapse_entropy else None)
        return {"class_entropy": entropy}, warning

    return watch


def get_judge(data: DataConfig, *, ds: ImageDataset | None = None, cache_dir: str | Path | None = None,
              progress: bool = True, log=print) -> Judge:
    """The cached judge for this dataset, training it first when the cache has none.
    `ds`: the images `data` describes, when the caller has them loaded already."""
    ds = ds if ds is not None else load_images(data)
    path = _cache_path(ds, data, cache_dir)
    kind = path.name.rsplit("-", 1)[1]
    if not has_checkpoint(path):
        log(f"training a {kind} judge for {ds.name} (cached in {path}) ...")
        overrides = [f"data.{k}={v}" for k, v in to_dict(data).items() if k not in ("name", "conditional", "flip")]
        overrides += ["train.batch_size=128", "train.lr=2e-3", "train.val_every=500", "train.sample_every=100000",
                      "train.ckpt_every=100000", "train.log_every=100"]
        if kind == "ae":
            overrides += ["model.latent_dim=32"]
        train(kind, data=data.name, out=path, steps=JUDGE_STEPS[kind], overrides=overrides, progress=progress,
              log=log, prepare=prepare_images)
    return load_judge(path)


def heldout_accuracy(judge: Judge, val: ImageDataset) -> float | None:
    """The judge's accuracy on the run's held-out split (how far its verdicts can be trusted)."""
    if not judge.has_classes or val.labels is None:
        return None
    return float((judge.probs(val.images).argmax(1) == val.labels.numpy()).mean())
