"""The audio judge: an `audioclf` (a CNN on log-mel spectrograms) trained on the run's own labelled clips and
cached under `<cache>/judges/<data fingerprint>-audioclf`, like the image judge (genlab.kinds.image.judge)."""

from __future__ import annotations

from pathlib import Path

from genlab.config import DataConfig
from genlab.data.audio import AudioDataset, load_audio
from genlab.data.fetch import cache_root
from genlab.errors import UsageError
from genlab.evaluation.judged import Judge, judge_key, needs_training, train_judge
from genlab.kinds.audio.prepare import prepare_audio
from genlab.loading import load

JUDGE_FAMILY = "audioclf"
JUDGE_STEPS = 1200


def load_judge(path: str | Path) -> Judge:
    """A judge from a run folder: an audioclf run (clips of the same sample rate and length)."""
    model = load(path)
    if model.family != JUDGE_FAMILY:
        raise UsageError(f"--judge {path} is a {model.family} run; an audio judge must be an {JUDGE_FAMILY} run")
    return Judge(model, model.family, Path(path))


def get_judge(data: DataConfig, *, ds: AudioDataset | None = None, cache_dir: str | Path | None = None,
              progress: bool = True, log=print) -> Judge:
    """The cached judge for these clips, training it first when the cache has none."""
    ds = ds if ds is not None else load_audio(data)
    if ds.labels is None or ds.num_classes < 2:
        raise UsageError(f"{ds.name} has no labels, so genlab cannot train an audio judge on it; pass --judge with an "
                         f"{JUDGE_FAMILY} run trained on labelled clips of the same sample rate and length")
    path = cache_root(cache_dir) / "judges" / f"{judge_key(ds.fingerprint(), data)}-{JUDGE_FAMILY}"
    if needs_training(path, log):
        train_judge(JUDGE_FAMILY, data, path, steps=JUDGE_STEPS, batch_size=64, prepare=prepare_audio,
                    progress=progress, log=log)
    return load_judge(path)
