"""Symbolic music corpora as texts: the built-in `bach-chorales`, folders of MIDI files, a split by piece.

Every piece becomes one text of space-separated tokens (genlab.musicio's grammar: per time point the time
shifts `t<k>`, a `bar` token at a bar line, then each note starting there as `v<voice> p<pitch> d<duration>`, on
a sixteenth-note grid; that module's docstring has the grammar and why it was chosen; it sits below
genlab.data because the MIDI output needs it too). A language model then trains on the texts unchanged, with
the music tokenizer (genlab.data.tokenizers.MusicTokenizer).

`bach-chorales`: the Bach files inside the music21 wheel (`music21/corpus/bach`: MusicXML and Humdrum; its
Roman-numeral analyses are not scores), no download. A file is kept when it has four voices: exactly four parts,
or parts whose names begin Soprano, Alto, Tenor and Bass once each (chorales with instruments that double or
descant: the instruments are left out). Ties become one note, grace notes are left out, onsets and ends are
rounded to the nearest sixteenth, bar lines come from the soprano's measures (bars where all four voices rest
before the first note or after the last, an instrumental prelude or postlude, are left out). A file whose notes,
in C, repeat an earlier file's is dropped as a duplicate, so that one harmonisation cannot sit on both sides of
the split. Parsing takes about 40 s, so the parse is cached as JSON under `<cache>/music/`, keyed by the recipe,
music21's version and the files read; the transposition is applied on load, so its modes share the cache. Of
music21 10.5's 413 files, 408 are kept: 3 are not four voices (two with two soprano parts, one a piano prelude)
and 2 are duplicates.

Transposition (`transpose`): "c" moves each chorale by the smallest shift (-6..+5 semitones) that takes its
key signature to none: C major or A minor; "none" leaves it as written; "augment" gives each chorale in every
key (shifts -6..+5) that keeps every voice inside the range the corpus gives that voice (its lowest to its
highest note as written). `split_chorales` keeps only the as-written version of a validation chorale and
every version of a training one, so only the training split is augmented.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genlab.data.fetch import cache_root
from genlab.data.progress import counted
from genlab.errors import DataError
from genlab.musicio import GRID, MAX_DURATION, Music, Note, from_text, key_of, read_midi, to_text
from genlab.runs import atomic_write

log = logging.getLogger("genlab.data")

RECIPE = 1            # bump when the parse changes, so that old caches are not reused
TRANSPOSE = ("c", "none", "augment")
SHIFTS = range(-6, 6)                       # one shift to each of the twelve keys
VOICE_NAMES = ("soprano", "alto", "tenor", "bass")   # voices 0..3
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")
MIDI_SUFFIXES = (".mid", ".midi")
SHOWN = 3             # dropped files named in a warning


@dataclass(frozen=True)
class Chorale:
    """One piece of a music corpus: a chorale (id its file's name, e.g. "bwv1.6") or a MIDI file (id its path in
    the folder), as a music text."""

    id: str
    text: str
    shift: int = 0          # semitones from the key it is written in
    primary: bool = True    # the version validation uses: the only one, or when augmented the as-written one


BACH = "bach-chorales"


def bach_chorales(transpose: str = "c", cache_dir: str | Path | None = None, limit: int | None = None) -> list[Chorale]:
    """The four-part Bach chorales of music21's corpus as texts (see the module docstring), in file order.
    `limit` parses only the first `limit` files (tests). Built once, then read from the cache."""
    _check_transpose(transpose)
    pieces = [(c["id"], shift_to_c(c["sharps"]), from_text(c["text"])) for c in _corpus(cache_dir, limit)["chorales"]]
    return _transposed(pieces, transpose)


def music_pieces(name: str, transpose: str = "c", cache_dir: str | Path | None = None) -> list[Chorale]:
    """`bach-chorales`, or a folder of MIDI files (`read_midi_folder`), transposed as `transpose` says. A MIDI
    file's key comes from its notes (Krumhansl-Schmuckler, genlab.musicio.key_of), not from a key signature, which
    MIDI files often lack or get wrong: "c" moves each piece from that key to C major or A minor."""
    if name == BACH:
        return bach_chorales(transpose, cache_dir)
    _check_transpose(transpose)
    pieces = [(c.id, shift_to(key_of(music)), music) for c in read_midi_folder(name) for music in [from_text(c.text)]]
    return _transposed(pieces, transpose)


def is_midi_source(name: str) -> bool:
    """Whether a --data value names music: `bach-chorales`, or a folder holding MIDI files (sub-folders too)."""
    path = Path(name)
    return name == BACH or (path.is_dir() and any(f.suffix.lower() in MIDI_SUFFIXES for f in path.rglob("*")))


def _check_transpose(transpose: str) -> None:
    if transpose not in TRANSPOSE:
        raise DataError(f"transpose={transpose!r}; expected one of {', '.join(TRANSPOSE)}")


def _transposed(pieces: list[tuple[str, int, Music]], transpose: str) -> list[Chorale]:
    """(id, the shift to C major / A minor, music) -> the pieces as `transpose` says (the module docstring)."""
    if transpose == "augment":
        ranges = _voice_ranges([music for _, _, music in pieces])
        return [Chorale(cid, to_text(music.transpose(s)), s, s == 0)
                for cid, _, music in pieces for s in SHIFTS if _fits(music, s, ranges)]
    return [Chorale(cid, to_text(music.transpose(s)), s)
            for cid, to_c, music in pieces for s in [to_c if transpose == "c" else 0]]


def shift_to(key: tuple[int, str]) -> int:
    """The shift in -6..+5 semitones from a key (tonic pitch class, mode) to C major or A minor."""
    tonic, mode = key
    return ((0 if mode == "major" else 9) - tonic + 6) % 12 - 6


def shift_to_c(sharps: int) -> int:
    """The shift in -6..+5 semitones that takes a key signature of `sharps` (flats < 0) to none (C major, A minor):
    each sharp is a fifth up, 7 semitones."""
    return (-7 * sharps + 6) % 12 - 6


def _voice_ranges(pieces: list[Music]) -> dict[int, tuple[int, int]]:
    ranges: dict[int, tuple[int, int]] = {}
    for music in pieces:
        for n in music.notes:
            lo, hi = ranges.get(n.voice, (n.pitch, n.pitch))
            ranges[n.voice] = (min(lo, n.pitch), max(hi, n.pitch))
    return ranges


def _fits(music: Music, shift: int, ranges: dict[int, tuple[int, int]]) -> bool:
    return all(ranges[n.voice][0] <= n.pitch + shift <= ranges[n.voice][1] for n in music.notes)


def split_chorales(chorales: list[Chorale], val_fraction: float = 0.1,
                   seed: int = 0) -> tuple[list[Chorale], list[Chorale]]:
    """(train, validation), split by piece: a seeded permutation of the sorted ids picks the validation pieces
    (round(val_fraction * pieces), at least one when val_fraction > 0), so the same ids, seed and fraction give
    the same split whatever the order or the transposition. Validation keeps each of its pieces' primary version
    only; training keeps every version of the others."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction!r}; expected a fraction in [0, 1)")
    ids = sorted({c.id for c in chorales})
    n_val = max(1, round(val_fraction * len(ids))) if val_fraction > 0 else 0
    if n_val >= len(ids) and n_val:
        raise DataError(f"{len(ids)} piece(s) cannot be split with val_fraction={val_fraction}; expected at least "
                        "one piece on each side (more pieces, or a smaller fraction)")
    order = np.random.default_rng(seed).permutation(len(ids))
    val_ids = {ids[i] for i in order[:n_val]}
    return ([c for c in chorales if c.id not in val_ids],
            [c for c in chorales if c.id in val_ids and c.primary])


def read_midi_folder(path: str | Path) -> list[Chorale]:
    """Every .mid/.midi file under `path` (sub-folders too; hidden ones skipped) as a text, as written (see
    genlab.musicio.read_midi), id = its path in the folder. A file that is not MIDI, is damaged, or has no notes is
    dropped and counted, with a warning naming the first few."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; expected a folder of MIDI files (.mid, .midi)")
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in MIDI_SUFFIXES and f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    if not files:
        raise DataError(f"{folder}: no .mid or .midi files found (searched sub-folders too); expected a folder of "
                        "Standard MIDI Files")
    pieces, dropped = [], []
    for f in files:
        try:
            pieces.append(Chorale(f.relative_to(folder).as_posix(), to_text(read_midi(f))))
        except DataError as e:
            dropped.append(str(e))
    if not pieces:
        raise DataError(f"{folder}: none of the {len(files)} MIDI files could be read (first: {dropped[0]})")
    if dropped:
        log.warning("dropped %d of %d MIDI files in %s: %s%s", len(dropped), len(files), folder,
                    "; ".join(dropped[:SHOWN]), " ..." if len(dropped) > SHOWN else "")
    return pieces


# ---------------------------------------------------------------------------------------------
# Parsing music21's corpus, cached

def _corpus(cache_dir, limit: int | None) -> dict:
    """{"params", "chorales": [{"id", "sharps", "text"} as written], "dropped": {id: reason}}, from the cache or
    built (and cached)."""
    import music21

    files = sorted(f for f in (Path(music21.__file__).parent / "corpus" / "bach").iterdir()
                   if f.suffix.lower() in SCORE_SUFFIXES)
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit={limit}; expected a positive number of chorale files to parse")
        files = files[:limit]
    params = {"recipe": RECIPE, "music21": music21.__version__, "grid": GRID, "max_duration": MAX_DURATION,
              "files": [f.name for f in files]}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / "music" / f"bach-chorales-{key}.json"
    cached = _read_cache(path, params)
    if cached is not None:
        return cached
    built = _build(files, params, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(built))
    return built


def _read_cache(path: Path, params: dict) -> dict | None:
    """The cached parse, or None when there is none or it is damaged (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["params"] != params or not isinstance(data["dropped"], dict):
            raise ValueError("its parameters differ")
        for c in data["chorales"]:
            if not (isinstance(c["id"], str) and isinstance(c["sharps"], int) and isinstance(c["text"], str)):
                raise ValueError(f"entry {str(c)[:60]} is not an id, sharps and text")
            from_text(c["text"])
    except (OSError, ValueError, KeyError, TypeError) as e:   # DataError (a bad text) is a ValueError
        log.warning("rebuilding %s: the cached parse cannot be used (%s)", path, e)
        return None
    return data


def _build(files: list[Path], params: dict, path: Path) -> dict:
    started = time.perf_counter()
    log.info("parsing %d Bach chorale files with music21 (once; cached at %s)", len(files), path)
    chorales, dropped, first_of = [], {}, {}
    with counted(len(files), "bach-chorales", "files parsed") as advance:
        for f in files:
            entry = _parse_chorale(f)
            advance()
            if isinstance(entry, str):
                dropped[f.stem] = entry
                continue
            in_c = to_text(from_text(entry["text"]).transpose(shift_to_c(entry["sharps"])))
            if in_c in first_of:
                dropped[f.stem] = f"duplicate (of {first_of[in_c]})"
                continue
            first_of[in_c] = f.stem
            chorales.append(entry)
    reasons = Counter(reason.split(" (")[0] for reason in dropped.values())
    log.info("bach-chorales: %d four-part chorales kept of %d files, %d dropped (%s), in %.0f s", len(chorales),
             len(files), len(dropped), ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none",
             time.perf_counter() - started)
    return {"params": params, "chorales": chorales, "dropped": dropped}


def _parse_chorale(path: Path) -> dict | str:
    """{"id", "sharps", "text"} of one score file, or why it is dropped."""
    from music21 import converter

    try:
        score = converter.parseFile(path, forceSource=True, storePickle=False)
    except Exception as e:  # music21 raises many types (its own, ValueError, KeyError, ...) on a file it cannot read
        return f"does not parse ({type(e).__name__}: {str(e)[:80]})"
    parts = _four_voices(list(score.parts))
    if parts is None:
        names = ", ".join(str(p.partName) for p in score.parts)
        return f"not four voices ({len(score.parts)} parts: {names[:80]})"
    notes = []
    for voice, part in enumerate(parts):
        for n in part.stripTies().flatten().notes:
            if n.quarterLength == 0:    # a grace note
                continue
            onset, end = _grid(n.offset), _grid(n.offset + n.quarterLength)
            notes += [Note(onset, voice, p.midi, min(MAX_DURATION, max(1, end - onset))) for p in n.pitches]
    bars = [_grid(m.offset) for m in parts[0].getElementsByClass("Measure")]
    if not notes or not bars:
        return "no notes" if not notes else "no bar lines"
    signatures = parts[0].flatten().getElementsByClass("KeySignature")
    sharps = signatures[0].sharps if signatures else 0
    if not isinstance(sharps, int):
        return f"non-standard key signature ({signatures[0]})"
    try:
        music = _trim(Music(tuple(notes), tuple(bars)))
    except DataError as e:
        return f"notes out of range ({e})"
    return {"id": path.stem, "sharps": sharps, "text": to_text(music)}


def _trim(music: Music) -> Music:
    """Without the bars where every voice rests before the first note or after the last (an instrumental
    prelude or postlude): the piece starts at the bar line of its first note and ends with its last note."""
    first = music.notes[0].onset
    start = max((b for b in music.bars if b <= first), default=0)
    return Music(tuple(n._replace(onset=n.onset - start) for n in music.notes),
                 tuple(b - start for b in music.bars if start <= b < music.end))


def _four_voices(parts: list) -> list | None:
    """The soprano, alto, tenor and bass parts of a score, or None."""
    if len(parts) == 4:
        return parts
    named: dict[str, list] = {}
    for p in parts:
        words = (p.partName or "").split()
        named.setdefault(words[0].lower() if words else "", []).append(p)
    if all(len(named.get(v, ())) == 1 for v in VOICE_NAMES):
        return [named[v][0] for v in VOICE_NAMES]
    return None


def _grid(quarters) -> int:
    """A music21 offset (quarter notes, a float or Fraction) -> the nearest sixteenth."""
    return round(float(quarters) * GRID)
