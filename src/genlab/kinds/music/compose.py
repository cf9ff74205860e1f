"""Music from a language model trained on music texts: continue a prompt (the opening bars of a piece, or nothing:
a new piece), cut each row at its <eos>, and lay several pieces out one after another for one file.

A prompt is a music text (genlab.musicio's grammar), or a .mid/.midi file or a text file holding one; `opening`
keeps its first few bars. The model continues from the prompt's last onset, so its first tokens are usually the
time shift to the next one."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.data.tokenizers import EOS, PAD
from genlab.errors import UsageError
from genlab.data.music import MIDI_SUFFIXES
from genlab.musicio import Music, parse, read_midi, to_text

MUSIC_TOKENS = 384    # tokens a piece gets by default: about 8 bars of a chorale (48 tokens a bar on average)
PROMPT_BARS = 2       # the bars of a prompt file that condition the samples by default
GAP_BARS = 1          # the rest between pieces laid out one after another
BAR = 16              # sixteenths in a bar of 4/4, the gap's length when a piece has no bar lines


def opening(music: Music, bars: int) -> Music:
    """The first `bars` bars of a piece: its notes that start before the bar line after them (with their full
    length), and those bar lines. A piece with no more bar lines than that is kept whole."""
    if bars < 1:
        raise UsageError(f"prompt bars={bars}; expected at least 1")
    if len(music.bars) <= bars:
        return music
    cut = music.bars[bars]
    return Music(tuple(n for n in music.notes if n.onset < cut), tuple(b for b in music.bars if b < cut))


def read_prompt(path: str | Path, bars: int = PROMPT_BARS) -> str:
    """The opening `bars` bars of a MIDI file, or of the music text in a text file, as a music text."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--prompt {path}: no such file; expected a MIDI file (.mid) or a text file of music tokens")
    if path.suffix.lower() in MIDI_SUFFIXES:
        music = read_midi(path)
    else:
        try:
            music, skipped = parse(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UsageError(f"--prompt {path}: not UTF-8 text; expected a MIDI file (.mid) or a text file of music "
                             "tokens (bar, t<k>, v<i>, p<m>, d<k>)") from None
        if skipped:
            raise UsageError(f"--prompt {path}: {skipped} word(s) are not music tokens; expected the grammar of "
                             "genlab.musicio (bar, t<k>, v<i>, p<m>, d<k>)")
    if not music.notes:
        raise UsageError(f"--prompt {path}: no notes; expected a piece whose opening bars have notes")
    return to_text(opening(music, bars))


@torch.no_grad()
def compose(model, tokenizer, n: int, *, prompt: str = "", generator: torch.Generator | None = None,
            **controls) -> list[str]:
    """n pieces, each the prompt and its continuation, as music texts. Every row starts a new document (after
    <eos>, as the training stream joins pieces) and ends at its next <eos>, or after max_new_tokens (default
    MUSIC_TOKENS). A prompt word outside the run's vocabulary is a UsageError naming it."""
    ids = [EOS] + tokenizer.encode(prompt, strict=True)
    rows = model.sample(n, cond=ids, generator=generator, **{"max_new_tokens": MUSIC_TOKENS, **controls})
    texts = []
    for row in rows[:, len(ids):].tolist():
        end = next((i for i, t in enumerate(row) if t in (EOS, PAD)), len(row))
        texts.append(" ".join(t for t in (prompt.strip(), tokenizer.decode(row[:end])) if t))
    return texts


def one_after_another(texts: list[str]) -> str:
    """Several pieces as one music text: each starts GAP_BARS bars after the previous one's last bar (or last note,
    if that ends later)."""
    notes, bars, start = [], [], 0
    for text in texts:
        music = parse(text)[0]
        notes += [n._replace(onset=n.onset + start) for n in music.notes]
        bars += [b + start for b in music.bars]
        length = _bar_length(music)
        start += max(music.end, music.bars[-1] + length if music.bars else 0) + GAP_BARS * length
    return to_text(Music(tuple(notes), tuple(bars)))


def _bar_length(music: Music) -> int:
    """The last bar's length (the gap between the last two bar lines), else BAR."""
    return music.bars[-1] - music.bars[-2] if len(music.bars) > 1 else BAR
