"""`genlab eval` for music runs (a language model on music texts): validation bits per token, and n new pieces
against the held-out ones (genlab.evaluation.music_metrics: Yang & Lerch's histogram overlaps of pitch classes,
intervals and durations; the share of notes in the prevailing key; polyphony and note density beside the data's;
the share of 8-onset n-grams copied from the training pieces, beside the held-out pieces' own share). Writes
eval.json with the same row format as the other kinds."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from genlab.data.text_loader import encode_corpus, eval_lm
from genlab.evaluation.music_metrics import music_metrics
from genlab.kinds.music.compose import MUSIC_TOKENS, compose
from genlab.kinds.music.prepare import music_corpus
from genlab.loading import load, load_config
from genlab.runs import atomic_write
from genlab.training.trainer import validate

# metric -> (axis, note); a metric with a data counterpart gets it as its row's reference value
ROWS = {
    "bits_per_token": ("realism", "validation cross-entropy in bits per music token (held-out pieces)"),
    "pitch_class_overlap": ("realism", "overlap of the pitch-class histograms with held-out pieces (1 = same)"),
    "interval_overlap": ("realism", "overlap of the melodic-interval histograms with held-out pieces"),
    "duration_overlap": ("realism", "overlap of the note-duration histograms with held-out pieces"),
    "in_key_share": ("realism", "share of notes in each piece's prevailing key (Krumhansl-Schmuckler)"),
    "polyphony": ("realism", "mean notes sounding at once"),
    "note_density": ("realism", "notes per bar"),
    "copy_share": ("novelty", "share of generated 8-onset n-grams found verbatim in the training pieces"),
    "skipped_token_share": ("realism", "share of generated tokens outside the music grammar (skipped)"),
}


def evaluate_music_run(run_dir: Path, *, n: int = 32, seed: int = 0, controls: dict | None = None,
                       progress: bool = True, log=print, **_) -> dict:
    t0 = time.time()
    cfg, model = load_config(run_dir), load(run_dir)
    data, tok = music_corpus(cfg), model.run.tokenizer
    controls = {"max_new_tokens": MUSIC_TOKENS, "temperature": 1.0, **(controls or {})}
    val_ids = encode_corpus(data.val, tok)
    windows = list(eval_lm(val_ids, model.config.block_size, 64, next(model.parameters()).device, limit=512))
    nats = validate(model, lambda: iter(windows), seed=0)["loss"]
    n_tokens = sum(w["ids"][:, 1:].numel() for w in windows)
    log(f"composing {n} pieces of up to {controls['max_new_tokens']} tokens ...")
    texts = compose(model, tok, n, generator=torch.Generator().manual_seed(seed), **controls)
    values = {"bits_per_token": nats / math.log(2), **music_metrics(texts, data.val, data.train)}
    rows = []
    for metric, (axis, note) in ROWS.items():
        row = {"metric": metric, "value": float(values[metric]), "axis": axis,
               "n_samples": n_tokens if metric == "bits_per_token" else n, "n_reference": len(data.val),
               "judge": "", "seed": seed, "note": note}
        if f"{metric}_data" in values:
            row["floor"] = float(values[f"{metric}_data"])
        rows.append(row)
    floor = {"what": "the held-out pieces' own statistics (copy share: theirs against the training pieces)",
             "n_samples": len(data.val), "n_reference": len(data.train),
             **{k.removesuffix("_data"): v for k, v in values.items() if k.endswith("_data")}}
    report = {"run": str(run_dir), "family": cfg.family, "data": cfg.data.name, "seed": seed, "n_samples": n,
              "judge": {"id": "", "kind": "none"}, "controls": controls, "rows": rows, "floor": floor,
              "samples": texts[:4], "seconds": round(time.time() - t0, 1)}
    atomic_write(run_dir / "eval.json", json.dumps(report, indent=2))
    return report
