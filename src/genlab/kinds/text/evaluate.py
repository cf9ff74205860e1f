"""`genlab eval` for text runs. Writes eval.json with the same row format as image runs.

- language models (gpt, lstm): validation cross-entropy, perplexity and bits per character; diversity
  of samples (distinct-1/2/3, self-BLEU); novelty (share of generated 8-token spans found verbatim in
  the training text); for `pycode`, the share of snippets `ast.parse` accepts after trimming;
- translation (seq2seq): BLEU, chrF and exact match on held-out pairs;
- classification (textclf): accuracy, macro-F1 and a confusion matrix, beside a bag-of-words logistic
  regression trained on the same split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from genlab import registry
from genlab.data.text_loader import encode_corpus, encode_texts, eval_labels, eval_lm
from genlab.data.tokenizers import EOS
from genlab.evaluation import text_metrics as T
from genlab.loading import load, load_config
from genlab.kinds.text.prepare import text_data
from genlab.runs import atomic_write
from genlab.kinds.text.textgen import translate
from genlab.training.trainer import validate

AXES = {"val_loss": "realism", "perplexity": "realism", "bits_per_char": "realism", "parse_share": "realism",
        "distinct_1": "diversity", "distinct_2": "diversity", "distinct_3": "diversity", "self_bleu": "diversity",
        "copied_8gram_share": "novelty", "bleu": "realism", "chrf": "realism", "exact_match": "realism",
        "accuracy": "realism", "macro_f1": "realism", "baseline_accuracy": "", "baseline_macro_f1": ""}


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit polynomial hash of every n-gram of a 1-D id array (vectorised; collisions ~2^-64)."""
    ids = np.asarray(ids, dtype=np.uint64)
    if len(ids) < n:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * np.uint64(1_000_003) + ids[k:len(ids) - n + 1 + k] + np.uint64(1)
    return h


def evaluate_text_run(run_dir: Path, *, n: int = 32, seed: int = 0, controls: dict | None = None,
                      progress: bool = True, log=print, **_) -> dict:
    t0 = time.time()
    cfg = load_config(run_dir)
    model = load(run_dir)
    data = text_data(cfg)
    task = registry.get(cfg.family).kind
    rows: list[dict] = []

    def add(metric: str, value, n_items: int, note: str = "") -> None:
        rows.append({"metric": metric, "value": None if value is None else float(value), "axis": AXES.get(metric, ""),
                     "n_samples": n_items, "n_reference": None, "judge": "", "seed": seed, "note": note})

    extra = {}
    if task == "lm":
        extra = _lm(model, data, cfg, n, seed, controls or {}, add)
    elif task == "pairs":
        extra = _translation(model, data, n, controls or {}, add)
    else:
        extra = _classification(model, data, cfg, seed, add)
    report = {"run": str(run_dir), "family": cfg.family, "data": cfg.data.name, "seed": seed, "n_samples": n,
              "judge": {"id": "", "kind": "none"}, "controls": controls or {}, "rows": rows, **extra,
              "seconds": round(time.time() - t0, 1)}
    atomic_write(run_dir / "eval.json", json.dumps(report, indent=2))
    return report


@torch.no_grad()
def _lm(model, data, cfg, n, seed, controls, add) -> dict:
    tok, dev = model.run.tokenizer, next(model.parameters()).device
    val_ids = encode_corpus(data.val, tok)
    windows = list(eval_lm(val_ids, model.config.block_size, 64, dev, limit=512))
    nats = validate(model, lambda: iter(windows), seed=0)["loss"]
    n_tokens = sum(w["ids"][:, 1:].numel() for w in windows)
    n_chars = sum(len(tok.decode(w["ids"][r, 1:].tolist())) for w in windows for r in range(len(w["ids"])))
    add("val_loss", nats, n_tokens, "cross-entropy, nats per token, held-out text")
    add("perplexity", T.perplexity(nats), n_tokens, "per token: compare runs with the same tokenizer only")
    add("bits_per_char", T.bits_per_char(nats, n_tokens, n_chars), n_chars, "comparable across tokenizers")
    settings = {"max_new_tokens": 200, "temperature": 1.0, **controls}
    ids = model.sample(n, cond=[EOS], generator=torch.Generator().manual_seed(seed), **settings)[:, 1:]
    rows = [[int(t) for t in row if int(t) > 3] for row in ids.cpu()]
    texts = [tok.decode(r) for r in rows]
    for k in (1, 2, 3):
        add(f"distinct_{k}", T.distinct_n(rows, k), n, "unique token n-grams / all, over the samples")
    add("self_bleu", T.self_bleu(texts), n, "BLEU of each sample against the others; lower = more diverse")
    train_hashes = np.unique(ngram_hashes(encode_corpus(data.train, tok).numpy(), 8))
    sample_hashes = [ngram_hashes(np.array(r), 8) for r in rows]
    spans = np.concatenate(sample_hashes) if sample_hashes else np.zeros(0, np.uint64)
    add("copied_8gram_share", float(np.isin(spans, train_hashes).mean()) if len(spans) else None, n,
        "share of generated 8-token spans that occur verbatim in the training text")
    if cfg.data.name == "pycode":
        add("parse_share", T.parse_share(texts), n, "ast.parse accepts it after trimming to the last complete "
                                                   "top-level statement")
    return {"sampling": settings, "samples": texts[:4]}


@torch.no_grad()
def _translation(model, data, n, controls, add) -> dict:
    pairs = data.val[:max(n, 500)]
    hyps = []
    for s in range(0, len(pairs), 128):
        hyps += translate(model, [p[0] for p in pairs[s:s + 128]], beam=controls.get("beam", 1),
                          length_penalty=controls.get("length_penalty", 1.0))
    scores = T.translation_scores(hyps, [p[1] for p in pairs])
    for key, note in (("bleu", "sacrebleu corpus BLEU"), ("chrf", "sacrebleu chrF"),
                      ("exact_match", "translation equals the reference exactly")):
        add(key, scores[key], len(pairs), note)
    return {"examples": [{"source": p[0], "reference": p[1], "output": h} for p, h in zip(pairs[:5], hyps[:5])]}


@torch.no_grad()
def _classification(model, data, cfg, seed, add) -> dict:
    dev = next(model.parameters()).device
    ids = encode_texts(data.val_texts, model.run.tokenizer)
    pred = []
    for batch in eval_labels(ids, data.val_labels, 256, dev, max_len=model.config.max_len):
        pred += model.predict(batch["ids"])[0].argmax(1).tolist()
    k = data.num_classes
    ours = T.classification_scores(pred, data.val_labels, k)
    base = T.classification_scores(T.bow_baseline(data.train_texts, data.train_labels, data.val_texts, seed),
                                   data.val_labels, k)
    m = len(data.val_labels)
    add("accuracy", ours["accuracy"], m)
    add("macro_f1", ours["macro_f1"], m)
    add("baseline_accuracy", base["accuracy"], m, "TF-IDF bag of words + logistic regression, same split")
    add("baseline_macro_f1", base["macro_f1"], m, "TF-IDF bag of words + logistic regression, same split")
    return {"classes": data.classes, "confusion": ours["confusion"], "baseline_confusion": base["confusion"]}
