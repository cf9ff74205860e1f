"""Tokenizers for the text families: characters, byte-level BPE (Hugging Face `tokenizers`), or the words of a
music text (genlab.musicio's grammar).

All reserve the same four special ids, so batches, models and samplers never ask which tokenizer
made them:

    0 <pad>   1 <bos>   2 <eos>   3 <unk>      (`vocab_size` counts them)

All share one small API: `vocab_size`, `encode(text, strict=False) -> list[int]` (no <bos>/<eos>
added), `decode(ids) -> str` (special ids are skipped, nothing stops at <eos>) and `to_json()`.
A trained tokenizer is saved beside the run as `tokenizer.json` (a JSON object with a "type" key)
and read back with `load_tokenizer`; the same JSON gives the same ids on every machine.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch

from genlab.errors import RunError, UsageError
from genlab.musicio import token_value
from genlab.runs import TOKENIZER, atomic_write, read_run_file

log = logging.getLogger("genlab.data")

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
KINDS = ("char", "bpe", "music")
MIN_BPE_VOCAB = len(SPECIALS) + 256  # the specials plus every byte, so any text can be encoded


class CharTokenizer:
    """One id per character: the specials, then the training text's characters in sorted order.

    Characters the training text never showed have no id. `encode(text, strict=True)` raises a
    ValueError listing them; the default `strict=False` falls back to <unk> (id 3) for each and logs
    one warning naming them, so a prompt with a stray character still runs, but decoding cannot give
    that character back.
    """

    kind = "char"

    def __init__(self, chars: str | Iterable[str]):
        chars = sorted(set(chars))
        bad = [c for c in chars if len(c) != 1]
        if bad:
            raise UsageError(f"character vocabulary entries must be single characters, got {bad[:5]}")
        self.chars = chars
        self.stoi = {c: i + len(SPECIALS) for i, c in enumerate(chars)}
        # Code points in sorted order: `np.searchsorted` then maps a whole text to ids at once.
        self._points = np.array([ord(c) for c in chars], dtype=np.int64)

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        if not seen:
            raise UsageError("cannot train a character tokenizer on empty text")
        return cls(seen)

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, text: str, *, strict: bool = False) -> list[int]:
        return self.encode_array(text, strict=strict).tolist()

    def encode_array(self, text: str, *, strict: bool = False) -> np.ndarray:
        """`encode` as an int64 numpy array, vectorised (megabytes of text in milliseconds)."""
        if not text:
            return np.zeros(0, dtype=np.int64)
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        if not len(self._points):
            pos = np.zeros(len(points), dtype=np.int64)
            known = np.zeros(len(points), dtype=bool)
        else:
            pos = np.searchsorted(self._points, points).clip(max=len(self._points) - 1)
            known = self._points[pos] == points
        ids = pos + len(SPECIALS)
        if not known.all():
            unknown = sorted({chr(p) for p in points[~known].tolist()})
            shown = " ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            if strict:
                raise UsageError(f"{len(unknown)} character(s) not in this run's vocabulary: {shown}. The run's "
                                 "vocabulary is character-level (only characters seen in its training text); "
                                 "remove them, or train with data.tokenizer=bpe to cover any text")
            log.warning("%d character(s) not in the character-level vocabulary were mapped to <unk>: %s",
                        len(unknown), shown)
            ids = np.where(known, ids, UNK)
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        n = len(SPECIALS)
        return "".join(self.chars[i - n] for i in ids if n <= i < n + len(self.chars))

    def to_json(self) -> str:
        return json.dumps({"type": "char", "specials": list(SPECIALS), "chars": "".join(self.chars)})


class BPETokenizer:
    """Byte-level BPE (GPT-2 style): text -> UTF-8 bytes -> merged pieces, via Hugging Face `tokenizers`.

    Every byte is in the base alphabet, so any text encodes without <unk> and `decode(encode(s)) == s`
    exactly (unicode, newlines, runs of spaces). Special-token strings such as "<eos>" inside the text
    are encoded as ordinary text, never as the special ids.
    """

    kind = "bpe"

    def __init__(self, hf):
        got = [hf.token_to_id(s) for s in SPECIALS]
        if got != list(range(len(SPECIALS))):
            raise UsageError(f"BPE tokenizer must map {SPECIALS} to ids 0..3, got {got}")
        hf.encode_special_tokens = True  # "<eos>" typed in a text is text, not the id 2
        self.hf = hf

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2000) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < MIN_BPE_VOCAB:
            raise UsageError(f"vocab_size={vocab_size} is too small for byte-level BPE; expected at least "
                             f"{MIN_BPE_VOCAB} (4 specials + 256 bytes)")
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, strict: bool = False) -> list[int]:
        # `strict` is accepted for a common signature; byte-level BPE has no unknown characters.
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        n = self.vocab_size
        return self.hf.decode([int(i) for i in ids if len(SPECIALS) <= i < n], skip_special_tokens=True)

    def to_json(self) -> str:
        return json.dumps({"type": "bpe", "tokenizer": self.hf.to_str()})


MUSIC_ORDER = {"bar": 0, "t": 1, "v": 2, "p": 3, "d": 4}   # the vocabulary's order: by kind of token, then number


class MusicTokenizer:
    """One id per word of a music text (genlab.musicio's grammar: `bar`, `t<k>`, `v<i>`, `p<m>`, `d<k>`): the
    specials, then the training texts' words ordered by kind and number. Words are split at whitespace and
    `decode` joins them with single spaces, so `decode(encode(text)) == text` for a text as genlab writes it.

    A word the training texts never showed has no id: `encode(text, strict=True)` raises a UsageError naming
    it; the default maps it to <unk> (id 3) with one warning naming them.
    """

    kind = "music"

    def __init__(self, tokens: Iterable[str]):
        tokens = set(tokens)
        bad = sorted(t for t in tokens if token_value(t) is None)
        if bad:
            raise UsageError(f"{len(bad)} word(s) are not music tokens: {' '.join(map(repr, bad[:10]))}; expected "
                             "the words of genlab.musicio's grammar (bar, t<k>, v<i>, p<m>, d<k>)")
        self.tokens = sorted(tokens, key=lambda t: (MUSIC_ORDER[token_value(t)[0]], token_value(t)[1]))
        self.stoi = {t: i + len(SPECIALS) for i, t in enumerate(self.tokens)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> "MusicTokenizer":
        seen: set[str] = set()
        for t in texts:
            seen.update(t.split())
        if not seen:
            raise UsageError("cannot train a music tokenizer on empty text")
        return cls(seen)

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.tokens)

    def encode(self, text: str, *, strict: bool = False) -> list[int]:
        words = text.split()
        unknown = sorted({w for w in words if w not in self.stoi})
        if unknown:
            shown = " ".join(repr(w[:40]) for w in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            if strict:
                raise UsageError(f"{len(unknown)} word(s) not in this run's music vocabulary: {shown}; expected "
                                 "words its training texts showed")
            log.warning("%d word(s) not in the music vocabulary were mapped to <unk>: %s", len(unknown), shown)
        return [self.stoi.get(w, UNK) for w in words]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        n = len(SPECIALS)
        return " ".join(self.tokens[i - n] for i in ids if n <= i < n + len(self.tokens))

    def to_json(self) -> str:
        return json.dumps({"type": "music", "specials": list(SPECIALS), "tokens": self.tokens})


Tokenizer = Union[CharTokenizer, BPETokenizer, MusicTokenizer]


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 2000) -> Tokenizer:
    """Train a `kind` ("char", "bpe" or "music") tokenizer on `texts`; `vocab_size` is used by BPE only."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size)
    if kind == "music":
        return MusicTokenizer.train(texts)
    raise UsageError(f"unknown tokenizer {kind!r}; expected one of {', '.join(KINDS)}")


def tokenizer_from_json(text: str) -> Tokenizer:
    """Rebuild a tokenizer from `to_json()` output."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"tokenizer JSON does not parse: {e}") from e
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "char":
        chars = data.get("chars")
        if not isinstance(chars, (str, list)) or not all(isinstance(c, str) for c in chars):
            raise UsageError(f"tokenizer JSON `chars` is {json.dumps(chars)[:60]}; expected a string of the "
                             "vocabulary's characters")
        return CharTokenizer(chars)
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_str(data.get("tokenizer"))
        except Exception as e:  # tokenizers raises a bare Exception for a malformed spec, TypeError for a non-string
            raise UsageError(f"tokenizer JSON `tokenizer` does not load as a Hugging Face tokenizer ({e}); "
                             "expected the JSON string that tokenizers' Tokenizer.to_str() writes") from e
        return BPETokenizer(hf)
    if kind == "music":
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise UsageError(f"tokenizer JSON `tokens` is {json.dumps(tokens)[:60]}; expected a list of the music "
                             "vocabulary's words")
        return MusicTokenizer(tokens)
    raise UsageError(f"tokenizer JSON has type {kind!r}; expected one of {', '.join(KINDS)}")


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> Path:
    """Write `tok` to `path` (a file, or a folder that gets `tokenizer.json`) atomically; returns the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    return atomic_write(path, tok.to_json())


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer written by `save_tokenizer` (a file, or a folder holding `tokenizer.json`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    try:
        return tokenizer_from_json(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from e


def run_tokenizer(run_dir: Path, vocab_size: int | None):
    """A run's tokenizer.json, checked against checkpoint.json (when it hashes it) and against the model's
    vocabulary size (a tokenizer from another run would make the model generate garbage)."""
    path = run_dir / TOKENIZER
    data = read_run_file(run_dir, TOKENIZER)
    try:
        tok = tokenizer_from_json(data.decode())
    except Exception as e:  # untrusted input: the parsers raise ValueError, KeyError, TypeError or tokenizers' Exception
        raise RunError(f"{path} is not a genlab tokenizer ({type(e).__name__}: {e}); the file is damaged") from None
    if vocab_size is not None and tok.vocab_size != vocab_size:
        raise RunError(f"{path} has {tok.vocab_size} tokens but config.json's model.vocab_size is {vocab_size}: "
                       "the tokenizer does not belong to this model")
    return tok
