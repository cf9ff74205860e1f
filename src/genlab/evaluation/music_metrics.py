"""Music metrics for music texts (genlab.musicio's grammar), after Yang & Lerch 2020, "On the evaluation of
generative models in music" (Neural Computing and Applications 32).

Histogram overlaps. The paper compares two sets through the overlap of kernel density estimates of intra-set
and inter-set distances between pieces; here the features' own histograms, pooled over each set, are compared:
overlap = sum_i min(p_i, q_i) of the two normalised histograms, 1 for identical distributions, 0 for disjoint
ones (and 0 when either set has no such notes). The features:

- pitch classes: 12 bins, every note;
- intervals: the signed step in semitones from each note to the next of the same voice (by onset; notes that
  share an onset in one voice go lowest first), clipped to -12..+12: 25 bins;
- durations: 1..64 sixteenths, 64 bins.

In-key share: each text's prevailing key by Krumhansl-Schmuckler (genlab.musicio.key_of: its duration-weighted
pitch-class profile correlated with the Krumhansl-Kessler major and minor profiles in all twelve rotations; the
best of the 24), then the share of its notes whose pitch class lies in that key's scale (major, or harmonic
minor: the raised seventh is a minor key's leading tone), averaged over the texts that have notes.

Copy share (novelty): the share of a set's n-grams found verbatim in the training texts, the unit being one
onset (the time shifts before it, its bar token and every note starting there: a chord of the chorale) and n = 8
onsets by default, about two bars of a chorale. A unit of one token would make an 8-gram under three notes,
which held-out chorales share with the training ones as often as copies do (`unit="token"` measures that).

Polyphony: the mean number of notes sounding at once, over the sixteenths where at least one sounds. Note
density: notes per bar, the bars being the `bar` tokens (a text without any counts bars of 16 sixteenths).
Both are reported for the generated texts and, beside them, for the reference texts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from genlab.errors import UsageError
from genlab.musicio import GRID, MAX_DURATION, Music, key_of, parse

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 11)}   # the minor key's harmonic scale
MAX_INTERVAL = 12
BAR = 4 * GRID          # the bar length counted in a text without bar tokens
UNITS = ("onset", "token")


def pitch_class_histogram(pieces: Sequence[Music]) -> np.ndarray:
    """Counts of each pitch class (0 = C) over every note."""
    return np.bincount([n.pitch % 12 for m in pieces for n in m.notes], minlength=12).astype(np.float64)


def interval_histogram(pieces: Sequence[Music]) -> np.ndarray:
    """Counts of the steps -12..+12 semitones (index 0 = -12) between consecutive notes of a voice."""
    steps = []
    for m in pieces:
        for voice in {n.voice for n in m.notes}:
            pitches = [n.pitch for n in m.notes if n.voice == voice]   # canonical order: by onset, then pitch
            steps += np.clip(np.diff(pitches), -MAX_INTERVAL, MAX_INTERVAL).tolist()
    return np.bincount(np.asarray(steps, dtype=np.int64) + MAX_INTERVAL,
                       minlength=2 * MAX_INTERVAL + 1).astype(np.float64)


def duration_histogram(pieces: Sequence[Music]) -> np.ndarray:
    """Counts of each duration 1..MAX_DURATION sixteenths (index 0 = one sixteenth)."""
    return np.bincount([n.duration - 1 for m in pieces for n in m.notes], minlength=MAX_DURATION).astype(np.float64)


def overlap(p: np.ndarray, q: np.ndarray) -> float:
    """The overlapping area of two histograms once normalised: 1 = identical, 0 = disjoint (or either empty)."""
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    return float(np.minimum(p / p.sum(), q / q.sum()).sum())


def in_key_share(pieces: Sequence[Music]) -> float:
    """The mean, over pieces with notes, of the share of a piece's notes in the scale of its own prevailing key."""
    shares = []
    for m in (m for m in pieces if m.notes):
        key = key_of(m)
        scale = {(key[0] + step) % 12 for step in SCALES[key[1]]}
        shares.append(sum(n.pitch % 12 in scale for n in m.notes) / len(m.notes))
    return float(np.mean(shares)) if shares else 0.0


def units(text: str, unit: str = "onset") -> list[tuple[str, ...]]:
    """A text cut into units: one per token, or one per onset (a run of time shifts, then everything up to the
    next shift)."""
    if unit not in UNITS:
        raise UsageError(f"unit={unit!r}; expected one of {', '.join(UNITS)}")
    tokens = text.split()
    if unit == "token":
        return [(t,) for t in tokens]
    out: list[list[str]] = []
    for i, t in enumerate(tokens):
        if not out or (t.startswith("t") and not tokens[i - 1].startswith("t")):
            out.append([])
        out[-1].append(t)
    return [tuple(u) for u in out]


def ngrams(texts: Sequence[str], n: int = 8, unit: str = "onset") -> set[tuple]:
    """Every n-gram of units in the texts."""
    out = set()
    for text in texts:
        u = units(text, unit)
        out.update(tuple(u[i:i + n]) for i in range(len(u) - n + 1))
    return out


def copy_share(texts: Sequence[str], training: set[tuple] | Sequence[str], n: int = 8, unit: str = "onset") -> float:
    """The share of the texts' n-grams (of `unit`s) found verbatim in the training texts (or their `ngrams`):
    0 = nothing copied, 1 = every n-gram copied; 0 when the texts are shorter than n units."""
    train = training if isinstance(training, set) else ngrams(training, n, unit)
    grams = [tuple(u[i:i + n]) for text in texts for u in [units(text, unit)] for i in range(len(u) - n + 1)]
    return sum(g in train for g in grams) / len(grams) if grams else 0.0


def polyphony(pieces: Sequence[Music]) -> float:
    """The mean number of notes sounding at once, over the sixteenths where at least one sounds."""
    sounding, active = 0, 0
    for m in pieces:
        counts = np.zeros(m.end, dtype=np.int64)
        for n in m.notes:
            counts[n.onset:n.onset + n.duration] += 1
        sounding += int(counts.sum())
        active += int((counts > 0).sum())
    return sounding / active if active else 0.0


def note_density(pieces: Sequence[Music]) -> float:
    """Notes per bar over the set: the bar tokens, or for a text without any, its length in bars of 16."""
    notes = sum(len(m.notes) for m in pieces)
    bars = sum(len(m.bars) or max(1, math.ceil(m.end / BAR)) for m in pieces if m.notes)
    return notes / bars if bars else 0.0


def music_metrics(generated: Sequence[str], reference: Sequence[str], training: Sequence[str] | None = None,
                  n: int = 8, unit: str = "onset") -> dict[str, float]:
    """Generated texts against reference (held-out) texts, and against the training texts for the copy share:

    pitch_class_overlap, interval_overlap, duration_overlap   histograms of generated vs reference, in [0, 1]
    in_key_share, in_key_share_data                           generated, and the reference's
    polyphony, polyphony_data; note_density, note_density_data
    copy_share, copy_share_data                               with `training`: the n-gram copy share of the
                                                              generated texts, and of the reference's (the floor)
    skipped_token_share                                       generated tokens outside the grammar, skipped
    """
    if not generated or not reference:
        raise UsageError(f"music metrics need generated and reference texts; got {len(generated)} generated and "
                         f"{len(reference)} reference")
    parsed = [parse(t) for t in generated]
    gen = [m for m, _ in parsed]
    ref = [parse(t)[0] for t in reference]
    tokens = sum(len(t.split()) for t in generated)
    out = {
        "pitch_class_overlap": overlap(pitch_class_histogram(gen), pitch_class_histogram(ref)),
        "interval_overlap": overlap(interval_histogram(gen), interval_histogram(ref)),
        "duration_overlap": overlap(duration_histogram(gen), duration_histogram(ref)),
        "in_key_share": in_key_share(gen), "in_key_share_data": in_key_share(ref),
        "polyphony": polyphony(gen), "polyphony_data": polyphony(ref),
        "note_density": note_density(gen), "note_density_data": note_density(ref),
        "skipped_token_share": sum(s for _, s in parsed) / tokens if tokens else 0.0,
    }
    if training is not None:
        train = ngrams(training, n, unit)
        out["copy_share"] = copy_share(generated, train, n, unit)
        out["copy_share_data"] = copy_share(reference, train, n, unit)
    return out
