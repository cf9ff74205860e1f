"""The domain judge: the feature extractor (and classifier) that image metrics are computed in.

There are no Inception-v3 weights offline, so genlab trains a judge on the run's own dataset and caches
it under `<cache>/judges/<dataset fingerprint>/`: a `classifier` (128-d post-ReLU features, class
probabilities) for labelled data, or an `ae` whose encoder codes serve as features for unlabelled data
(then Inception Score and class metrics are not available, and the output says so).
"""

from __future__ import annotations

from pathlib import Path


from genlab.config import DataConfig, as_overrides
from genlab.data import ImageDataset, load_images
from genlab.data.fetch import cache_root
from genlab.errors import UsageError
from genlab.evaluation.image_metrics import normalised_class_entropy
from genlab.evaluation.judged import Judge, judge_key, needs_training
from genlab.kinds.image.prepare import prepare_images
from genlab.loading import load
from genlab.runs import has_checkpoint
from genlab.training.run import train

JUDGE_STEPS = {"classifier": 1500, "ae": 1500}


def load_judge(path: str | Path) -> Judge:
    """A judge from a run folder: a `classifier` run (any data of the same image shape) or an `ae` run."""
    model = load(path)
    if model.family not in ("classifier", "ae"):
        raise UsageError(f"--judge {path} is a {model.family} run; a judge must be a classifier or ae run")
    return Judge(model, model.family, Path(path))


def _cache_path(ds: ImageDataset, data: DataConfig, cache_dir) -> Path:
    kind = "classifier" if ds.labels is not None and ds.num_classes >= 2 else "ae"
    return cache_root(cache_dir) / "judges" / f"{judge_key(ds.fingerprint(), data)}-{kind}"


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
    if needs_training(path, log):
        log(f"training a {kind} judge for {ds.name} (cached in {path}) ...")
        # a few-shot run's judge (data.per_class) still learns from every training image of its classes
        overrides = as_overrides("data", data, skip=("name", "conditional", "flip", "per_class", "per_class_seed"))
        overrides += ["train.batch_size=128", "train.lr=2e-3", "train.val_every=500", "train.sample_every=100000",
                      "train.ckpt_every=100000", "train.log_every=100"]
        if kind == "ae":
            overrides += ["model.latent_dim=32"]
        train(kind, data=data.name, out=path, steps=JUDGE_STEPS[kind], overrides=overrides, progress=progress,
              log=log, prepare=prepare_images)
    return load_judge(path)
