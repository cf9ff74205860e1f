"""Text metrics: likelihood (perplexity, bits per character), diversity (distinct-n, self-BLEU),
novelty (verbatim n-gram spans), code validity (ast.parse), translation (BLEU, chrF, exact match) and
classification (accuracy, macro-F1, confusion matrix). BLEU and chrF come from sacrebleu.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence

import numpy as np

from genlab.errors import UsageError


def perplexity(nats_per_token: float) -> float:
    """exp(mean cross-entropy per token)."""
    return math.exp(nats_per_token)


def bits_per_char(nats_per_token: float, tokens: int, chars: int) -> float:
    """Cross-entropy converted to bits per character: tokens * nats / (chars * ln 2). Comparable across
    tokenizers, unlike perplexity."""
    if chars <= 0:
        raise UsageError("bits_per_char needs a positive character count")
    return nats_per_token * tokens / (chars * math.log(2))


def distinct_n(texts: Sequence[Sequence[str]], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over every sample (token sequences)."""
    grams = [tuple(t[i:i + n]) for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str], max_refs: int = 50) -> float:
    """Self-BLEU (Zhu et al. 2018): mean BLEU of each sample against the others (lower = more diverse).
    Each sample is scored against at most `max_refs` others to keep it O(n * max_refs)."""
    from sacrebleu.metrics import BLEU

    if len(texts) < 2:
        raise UsageError("self-BLEU needs at least two samples")
    bleu = BLEU(effective_order=True)
    scores = []
    for i, hyp in enumerate(texts):
        refs = [t for j, t in enumerate(texts) if j != i][:max_refs]
        scores.append(bleu.sentence_score(hyp, refs).score)
    return float(np.mean(scores))


def ngram_set(ids: Sequence[int], n: int) -> set[tuple[int, ...]]:
    return {tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)}


def copied_span_share(samples: Sequence[Sequence[int]], train_ngrams: set[tuple[int, ...]], n: int = 8) -> float:
    """Novelty: the share of generated n-token spans that occur verbatim in the training text
    (0 = nothing copied, 1 = every span copied)."""
    spans = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
    return sum(sp in train_ngrams for sp in spans) / len(spans) if spans else 0.0


def trim_to_statements(code: str) -> str:
    """Cut generated code after its last complete top-level statement (a line starting at column 0
    that parses together with everything before it). Returns "" when nothing parses."""
    lines = code.split("\n")
    starts = [i for i, line in enumerate(lines) if line and not line[0].isspace()] + [len(lines)]
    for end in reversed(starts[1:]):
        candidate = "\n".join(lines[:end])
        if _parses(candidate):
            return candidate
    return ""


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def parse_share(snippets: Sequence[str]) -> float:
    """The share of snippets that `ast.parse` accepts after trimming to the last complete top-level
    statement (an empty trim counts as a failure)."""
    ok = [bool(trim_to_statements(s).strip()) for s in snippets]
    return sum(ok) / len(ok) if ok else 0.0


def translation_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, default settings) and the exact-match rate."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hyps) != len(refs):
        raise UsageError(f"{len(hyps)} hypotheses for {len(refs)} references")
    return {"bleu": BLEU().corpus_score(list(hyps), [list(refs)]).score,
            "chrf": CHRF().corpus_score(list(hyps), [list(refs)]).score,
            "exact_match": float(np.mean([h.strip() == r.strip() for h, r in zip(hyps, refs)]))}


def classification_scores(pred: Sequence[int], true: Sequence[int], num_classes: int) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows = true class, columns = predicted)."""
    from sklearn.metrics import confusion_matrix, f1_score

    pred, true = np.asarray(pred), np.asarray(true)
    return {"accuracy": float((pred == true).mean()),
            "macro_f1": float(f1_score(true, pred, average="macro", labels=list(range(num_classes)),
                                       zero_division=0)),
            "confusion": confusion_matrix(true, pred, labels=list(range(num_classes))).tolist()}


def bow_baseline(train_texts, train_labels, val_texts, seed: int = 0) -> np.ndarray:
    """Predictions of a bag-of-words (unigram+bigram TF-IDF) logistic regression trained on the same split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
                        LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(list(train_texts), list(train_labels))
    return clf.predict(list(val_texts))
