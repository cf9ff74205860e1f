"""The music kind's data for a language model: the pieces (`bach-chorales` or a folder of MIDI files, through
genlab.data.music) as texts split by piece, always with the music tokenizer, and the training preview: a few
seeded new pieces as samples/step-N.txt, .mid, .wav and a piano roll .png."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genlab.audioio import save_wav
from genlab.config import RunConfig
from genlab.data.music import BACH, music_pieces, split_chorales
from genlab.data.text import TextCorpus
from genlab.data.tokenizers import MusicTokenizer
from genlab.imageio import save_png
from genlab.kinds.music.compose import compose, one_after_another
from genlab.kinds.music.roll import piano_roll
from genlab.kinds.text.prepare import TEXT_SEPARATOR, prepare_text
from genlab.models.base import eval_mode
from genlab.musicio import MUSIC_NOTICE, render_wav, write_midi
from genlab.prepare import Prepared, write_text
from genlab.provenance import image_metadata

PREVIEW_PIECES, PREVIEW_TOKENS = 3, 256
RENDER_RATE = 22050     # the WAV renderings' sample rate


def music_corpus(cfg: RunConfig) -> TextCorpus:
    d = cfg.data
    pieces = music_pieces(d.name, d.transpose)
    train, val = split_chorales(pieces, d.val_fraction, d.seed)
    where = "music21's corpus (Bach)" if d.name == BACH else f"MIDI files in {d.name}"
    return TextCorpus([c.text for c in train], [c.text for c in val], name=d.name,
                      source=f"{where}, transpose={d.transpose}, split by piece")


def prepare_music(cfg: RunConfig, run_dir: Path, *, resume: bool) -> Prepared:
    cfg.data.tokenizer = MusicTokenizer.kind
    return prepare_text(cfg, run_dir, resume, data=music_corpus(cfg), preview=music_preview)


def write_music(texts: list[str], stem: Path, metadata: dict) -> None:
    """The pieces one after another as stem.mid (with its JSON sidecar) and stem.wav, and their piano roll
    (a row each) as stem.png, all carrying `metadata`."""
    joined = one_after_another(texts)
    write_midi(stem.with_suffix(".mid"), joined, metadata)
    save_wav(stem.with_suffix(".wav"), render_wav(joined, RENDER_RATE), RENDER_RATE, metadata)
    save_png(piano_roll(texts), stem.with_suffix(".png"), metadata)


def music_preview(tok):
    """A few new pieces with seed 0: samples/step-N.txt (their texts), .mid, .wav and .png."""
    def preview(model: nn.Module, step: int, run_dir: Path):
        with eval_mode(model):
            texts = compose(model, tok, PREVIEW_PIECES, generator=torch.Generator().manual_seed(0),
                            max_new_tokens=PREVIEW_TOKENS, temperature=1.0)
        stem = run_dir / "samples" / f"step-{step:07d}"
        write_text(stem.with_suffix(".txt"), TEXT_SEPARATOR.join(texts))
        meta = image_metadata(run_dir, seed=0, settings={"n": PREVIEW_PIECES, "max_new_tokens": PREVIEW_TOKENS},
                              kind="training preview", preview_step=step, comment=MUSIC_NOTICE)
        write_music(texts, stem, meta)
        return {}, None

    return preview
