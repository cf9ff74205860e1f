"""`genlab eval` for audio runs: in the audio judge's features (genlab.evaluation.judged) the same axes as
images: judge-FAD, KID, precision/recall, density/coverage, Inception Score from the judge's classes (what
WaveGAN reports on spoken digits), class entropy, conditional accuracy, and memorisation in log-mel space; with
the real-vs-real floor at the same N."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from genlab.data.audio import load_audio
from genlab.data.audio_features import log_mel
from genlab.data.images import split
from genlab.evaluation.judged import Judge, Reference, evaluate_judged
from genlab.kinds.audio.judge import get_judge, load_judge
from genlab.kinds.audio.prepare import eval_clips
from genlab.loading import load, load_config
from genlab.prepare import needs_labels
from genlab.training.trainer import validate

FAD_NOTE = ("judge-FAD: the Fréchet distance in the features of an audio judge trained on this data; not comparable "
            "with published FAD, which uses VGGish")
COPIES = {"n_fft": 256, "hop": 128, "n_mels": 32}   # the log-mel space memorisation is measured in


def evaluate_audio_run(run_dir: Path, *, n: int = 500, seed: int = 0, judge: str | Path | Judge | None = None,
                       controls: dict | None = None, progress: bool = True, log=print) -> dict:
    """Score a run, write `eval.json` into it and return the report."""
    t0 = time.time()
    cfg = load_config(run_dir)
    model = load(run_dir)
    ds = load_audio(cfg.data)
    train, val = split(ds, cfg.data.val_fraction, cfg.data.seed)
    if not isinstance(judge, Judge):
        judge = load_judge(judge) if judge else get_judge(cfg.data, ds=ds, progress=progress, log=log)
    sr = ds.sample_rate

    def copy_space(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([log_mel(x[i:i + 500, 0] if x.ndim == 3 else x[i:i + 500], sr, **COPIES).flatten(1)
                          for i in range(0, len(x), 500)])

    ref = Reference(train.waves[:, None], val.waves[:, None], val.labels, "clips", distance="fad",
                    distance_note=FAD_NOTE, copy_space=copy_space,
                    copy_note="log-mel near-copies only (nearest training clip closer than 1/3 of its own NN "
                              "distance)", train_labels=train.labels)
    labelled = needs_labels(cfg)
    held_val = val if labelled else type(val)(val.waves, None, [], val.sample_rate, val.name, val.source)
    dev = next(model.parameters()).device
    with torch.no_grad():
        heldout = validate(model, lambda: eval_clips(held_val, 256, dev), seed=0)
    return evaluate_judged(run_dir, cfg, model, judge, ref, heldout, n=n, seed=seed, controls=controls, t0=t0,
                           log=log)
