"""A piano roll: music texts as a picture (one row of the picture per piece), time to the right, pitch up, a colour
per voice, bar lines in grey, the Cs of each octave as faint lines."""

from __future__ import annotations

import numpy as np

from genlab.musicio import parse

VOICE_COLOURS = np.array([(214, 39, 40), (31, 119, 180), (44, 160, 44), (148, 103, 189), (255, 127, 14),
                          (140, 86, 75), (227, 119, 194), (23, 190, 207)], dtype=np.uint8)   # voice i: i % 8
BACKGROUND, BAR_LINE, OCTAVE_LINE, SEPARATOR = 255, 200, 235, 128
STEP_PX, PITCH_PX = 3, 3        # pixels per sixteenth and per semitone
MAX_STEPS = 1024                # sixteenths shown (64 bars of 4/4); later notes are cut off
MARGIN = 2                      # semitones of room above the highest and below the lowest note
MIN_RANGE = 24                  # semitones shown at least (a piece of few notes still reads as music)


def piano_roll(texts: list[str]) -> np.ndarray:
    """(H, W, 3) uint8: the pieces one under another, on a shared pitch range (tokens outside the grammar are
    skipped, as genlab.musicio.parse does)."""
    pieces = [parse(t)[0] for t in texts]
    pitches = [n.pitch for m in pieces for n in m.notes] or [60]
    lo, hi = min(pitches) - MARGIN, max(pitches) + MARGIN
    widen = max(0, MIN_RANGE - (hi - lo + 1))
    lo, hi = max(0, lo - widen // 2), min(127, hi + widen - widen // 2)
    steps = min(MAX_STEPS, max([max(m.end, max(m.bars, default=0)) for m in pieces] + [16]))
    rows = []
    for m in pieces:
        img = np.full(((hi - lo + 1) * PITCH_PX, steps * STEP_PX, 3), BACKGROUND, np.uint8)
        for p in range(lo, hi + 1):
            if p % 12 == 0:
                img[(hi - p) * PITCH_PX + PITCH_PX - 1] = OCTAVE_LINE
        for b in m.bars:
            if b < steps:
                img[:, b * STEP_PX] = BAR_LINE
        for n in m.notes:
            if n.onset < steps and lo <= n.pitch <= hi:
                y, x0 = (hi - n.pitch) * PITCH_PX, n.onset * STEP_PX
                x1 = min(steps, n.onset + n.duration) * STEP_PX - 1   # a 1-px gap shows repeated notes apart
                img[y:y + PITCH_PX - 1, x0:max(x0 + 1, x1)] = VOICE_COLOURS[n.voice % len(VOICE_COLOURS)]
        rows += [img, np.full((2, img.shape[1], 3), SEPARATOR, np.uint8)]
    return np.concatenate(rows[:-1]) if rows else np.full((PITCH_PX, STEP_PX, 3), BACKGROUND, np.uint8)
