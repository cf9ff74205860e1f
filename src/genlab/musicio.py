"""Symbolic music: its text form, MIDI files with provenance, and a small synthesiser to listen to it.

The text (what genlab's language models train on, through the music tokenizer of genlab.data.tokenizers) is a
note-event stream on a sixteenth-note grid, tokens separated by single spaces:

    t<k>              move the time cursor k sixteenths on (1 <= k <= 16: a longer gap is several shifts)
    bar               a bar line at the cursor
    v<i> p<m> d<k>    a note starting at the cursor: voice i (0..14; a chorale's 0 soprano, 1 alto, 2 tenor,
                      3 bass), MIDI pitch m (0..127), duration k sixteenths (1..64)

The cursor starts at 0. At each time point (a bar line or an onset), in time order, come the shifts that reach
it, then `bar` if a bar line falls there, then the notes starting there by voice, then pitch. A C major chord
on the first beat of a 4/4 bar, held for a half note in the lower voices while the soprano steps C D:

    bar v0 p72 d4 v1 p67 d8 v2 p64 d8 v3 p48 d8 t4 v0 p74 d4 t4 ...

Why this form and not four voices on the grid (DeepBach's, one pitch-or-hold token per voice per sixteenth):
the same grammar holds any MIDI file (any number of voices, chords within a voice), so a folder of MIDI files
trains as the chorales do; a note is one event with its duration rather than a run of holds, and time is
relative (a model learns rhythm as shifts); the bar tokens carry the metre and the phase of the bar (pickups).
The length is about the same: a chorale is 805 tokens on average (341 to 3,345), where four voices on the grid
take 4 x 225 steps. The vocabulary is small: 87 words for the chorales in C, 91 ids with the 4 specials.

`Music` (notes and bar lines) <-> text is exact: `from_text(to_text(m)) == m` for every `Music`, whose
constructor puts the notes in that canonical order (a note repeated at the same onset, voice and pitch keeps its
longest duration). `from_text` is strict; `parse` reads a language model's output, skipping and counting the
tokens that do not fit the grammar (a note is its three tokens in a row), and never raises.

MIDI: `write_midi` writes one track per voice (voice i on channel i, skipping channel 10, which General MIDI
gives to drums), the bar lines as time signatures, and the provenance as meta events plus a JSON sidecar;
`read_midi` reads any MIDI file back onto the grid. text -> MIDI -> text is exact for texts whose bar lines
start at 0 (a chorale, a generated text that starts with `bar`), lie at most 255 sixteenths apart and come
before the last note's end.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import mido
import numpy as np
from mido.midifiles.meta import KeySignatureError

from genlab.errors import DataError, UsageError
from genlab.provenance import as_text, write_sidecar
from genlab.runs import atomic_write
from genlab.version import __version__

log = logging.getLogger("genlab.music")

GRID = 4                # steps per quarter note: sixteenths
MAX_SHIFT = 16          # the longest time-shift token; a longer gap is written as several
MAX_DURATION = 64       # sixteenths (four 4/4 bars); longer notes are clipped to it when read from MIDI
VOICE_CHANNELS = tuple(c for c in range(16) if c != 9)   # voice i plays on channel VOICE_CHANNELS[i]
MAX_VOICES = len(VOICE_CHANNELS)
TOKEN = re.compile(r"(bar)|([tvpd])(0|[1-9][0-9]*)")
LIMITS = {"t": (1, MAX_SHIFT), "v": (0, MAX_VOICES - 1), "p": (0, 127), "d": (1, MAX_DURATION)}

TICKS_PER_BEAT = 480
TICKS = TICKS_PER_BEAT // GRID            # ticks per sixteenth in the files genlab writes
VELOCITY = 80
MAX_MIDI_BYTES = 16 * 2**20               # a larger file is refused: no chorale, and no sane sample, is near it
MUSIC_NOTICE = "AI-generated music made with genlab; not a human composition"

HARMONICS = (1.0, 0.5, 0.3, 0.15)         # the synthesiser's partials: relative amplitudes of f, 2f, 3f, 4f
ATTACK, DECAY, SUSTAIN, RELEASE = 0.01, 0.08, 0.7, 0.08    # ADSR: seconds, seconds, level, seconds
PEAK = 0.9                                # render_wav's output peak
MAX_RENDER_SECONDS = 600                  # notes starting later are not rendered (a runaway generated text)

# Krumhansl & Kessler 1982 key profiles, tonic first (Krumhansl 1990, "Cognitive foundations of musical pitch")
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


class Note(NamedTuple):
    onset: int       # sixteenths from the start
    voice: int       # 0..MAX_VOICES - 1
    pitch: int       # MIDI note number, 60 = middle C
    duration: int    # sixteenths, 1..MAX_DURATION


@dataclass(frozen=True)
class Music:
    """Notes and bar lines on the sixteenth grid, in canonical order (see the module docstring)."""

    notes: tuple[Note, ...]
    bars: tuple[int, ...] = ()

    def __post_init__(self):
        longest: dict[tuple[int, int, int], int] = {}
        for note in self.notes:
            onset, voice, pitch, duration = (int(x) for x in note)
            if onset < 0 or not 0 <= voice < MAX_VOICES or not 0 <= pitch <= 127 or not 1 <= duration <= MAX_DURATION:
                raise DataError(f"note {tuple(note)} (onset, voice, pitch, duration) is out of range; expected an "
                                f"onset >= 0, a voice in 0..{MAX_VOICES - 1}, a MIDI pitch in 0..127 and a duration "
                                f"in 1..{MAX_DURATION} sixteenths")
            key = (onset, voice, pitch)
            longest[key] = max(duration, longest.get(key, 0))
        bars = sorted({int(b) for b in self.bars})
        if bars and bars[0] < 0:
            raise DataError(f"bar line at {bars[0]}; expected bar lines at times >= 0")
        object.__setattr__(self, "notes", tuple(Note(*k, d) for k, d in sorted(longest.items())))
        object.__setattr__(self, "bars", tuple(bars))

    @property
    def end(self) -> int:
        """When the last note ends, in sixteenths (0 without notes)."""
        return max((n.onset + n.duration for n in self.notes), default=0)

    def transpose(self, semitones: int) -> "Music":
        return Music(tuple(n._replace(pitch=n.pitch + semitones) for n in self.notes), self.bars)


def find_key(profile: np.ndarray) -> tuple[int, str]:
    """(tonic pitch class, "major" or "minor") whose Krumhansl-Kessler profile correlates best with a 12-bin
    pitch-class profile; C major for a flat profile (no notes, or every pitch class alike: every key fits alike)."""
    profile = np.asarray(profile, dtype=np.float64)
    if profile.std() == 0:
        return 0, "major"
    best = max(((np.corrcoef(profile, np.roll(ref, tonic))[0, 1], tonic, mode)
                for mode, ref in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)) for tonic in range(12)),
               key=lambda c: c[0])
    return best[1], best[2]


def key_of(music: Music) -> tuple[int, str]:
    """The prevailing key of a piece: `find_key` of its pitch classes weighted by duration."""
    profile = np.zeros(12)
    for n in music.notes:
        profile[n.pitch % 12] += n.duration
    return find_key(profile)


def token_value(token: str) -> tuple[str, int] | None:
    """("bar", 0), ("t", k), ("v", i), ("p", m) or ("d", k) for a token of the grammar; None for anything else."""
    m = TOKEN.fullmatch(token)
    if m is None:
        return None
    if m.group(1):
        return "bar", 0
    kind, value = m.group(2), int(m.group(3))
    lo, hi = LIMITS[kind]
    return (kind, value) if lo <= value <= hi else None


def to_text(music: Music) -> str:
    """The text of `music` (the module docstring's grammar)."""
    starts: dict[int, list[Note]] = {}
    for note in music.notes:
        starts.setdefault(note.onset, []).append(note)
    bars = set(music.bars)
    tokens, cursor = [], 0
    for time in sorted(bars | starts.keys()):
        gap = time - cursor
        while gap > 0:
            tokens.append(f"t{min(gap, MAX_SHIFT)}")
            gap -= MAX_SHIFT
        cursor = time
        if time in bars:
            tokens.append("bar")
        for note in starts.get(time, ()):
            tokens += [f"v{note.voice}", f"p{note.pitch}", f"d{note.duration}"]
    return " ".join(tokens)


def from_text(text: str) -> Music:
    """The `Music` of a text; a token that does not fit the grammar is a DataError naming it."""
    return _read(text, strict=True)[0]


def parse(text: str) -> tuple[Music, int]:
    """(the `Music` of a text, how many of its tokens were skipped): a language model's output may be malformed;
    a token outside the grammar, or a note not given as its three tokens v p d in a row, is skipped."""
    return _read(text, strict=False)


def _read(text: str, strict: bool) -> tuple[Music, int]:
    notes, bars, cursor, skipped = [], [], 0, 0
    pending: list[int] = []   # the voice, then the pitch, of a note whose tokens have begun

    def skip(position: int, token: str, why: str, count: int = 1):
        nonlocal skipped
        if strict:
            raise DataError(f"music text token {position} {token[:40]!r} {why}; expected the grammar of "
                            "genlab.musicio: t<1..16>, bar, or a note v<0..14> p<0..127> d<1..64>")
        skipped += count

    tokens = text.split()
    for i, token in enumerate(tokens):
        parsed = token_value(token)
        if pending and (parsed is None or parsed[0] != "vpd"[len(pending)]):
            skip(i, token, f"breaks off the note {' '.join(tokens[i - len(pending):i])!r}", len(pending))
            pending = []
        if parsed is None:
            skip(i, token, "is not a music token")
            continue
        kind, value = parsed
        if kind == "v" or pending:   # with a note pending, `kind` is the one it expects
            pending.append(value)
            if len(pending) == 3:
                notes.append(Note(cursor, *pending))
                pending = []
        elif kind == "t":
            cursor += value
        elif kind == "bar":
            bars.append(cursor)
        else:
            skip(i, token, "comes outside a note (a note is v<voice> p<pitch> d<duration> in a row)")
    if pending:
        skip(len(tokens), "<end>", f"comes inside the note {' '.join(tokens[-len(pending):])!r}", len(pending))
    return Music(tuple(notes), tuple(bars)), skipped


# ---------------------------------------------------------------------------------------------
# MIDI

def midi_bytes(music: Music, metadata: dict[str, str], tempo_bpm: float = 90) -> bytes:
    """`music` as a type-1 MIDI file: a conductor track (name, the AI notice as copyright, the JSON of `metadata`
    as a text event, tempo, time signatures at the bar lines), then one track per voice."""
    _check_tempo(tempo_bpm)
    conductor = [(0, mido.MetaMessage("track_name", name=f"genlab {__version__}")),
                 (0, mido.MetaMessage("copyright", text=MUSIC_NOTICE)),
                 (0, mido.MetaMessage("text", text=json.dumps(as_text(metadata), sort_keys=True))),
                 (0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm)))]
    previous = None
    for i, bar in enumerate(music.bars):
        length = music.bars[i + 1] - bar if i + 1 < len(music.bars) else max(previous or 0, music.end - bar, 1)
        if length != previous:
            num, den = _time_signature(length)
            conductor.append((bar * TICKS, mido.MetaMessage("time_signature", numerator=num, denominator=den)))
            previous = length
    tracks = [_track(conductor, music.end * TICKS)]
    for voice in sorted({n.voice for n in music.notes}):
        channel = VOICE_CHANNELS[voice]
        events = [(0, mido.MetaMessage("track_name", name=f"voice {voice}"))]
        for n in music.notes:
            if n.voice == voice:
                events.append((n.onset * TICKS, mido.Message("note_on", channel=channel, note=n.pitch,
                                                             velocity=VELOCITY)))
                events.append(((n.onset + n.duration) * TICKS, mido.Message("note_off", channel=channel,
                                                                            note=n.pitch)))
        tracks.append(_track(events, music.end * TICKS))
    buf = io.BytesIO()
    mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT, tracks=tracks).save(file=buf)
    return buf.getvalue()


def _check_tempo(tempo_bpm: float) -> None:
    if not 0 < tempo_bpm <= 1000:
        raise UsageError(f"tempo_bpm={tempo_bpm!r}; expected beats per minute in (0, 1000]")


def _time_signature(length: int) -> tuple[int, int]:
    """(numerator, denominator) of a bar `length` sixteenths long: 16 -> 4/4, 6 -> 3/8, 5 -> 5/16; a bar longer
    than a time signature can say (over 255 sixteenths, and not whole notes) becomes 255/16."""
    for den, step in ((4, 4), (8, 2), (16, 1), (2, 8), (1, 16)):
        if length % step == 0 and length // step <= 255:
            return length // step, den
    return 255, 16


def _track(events: list, end_tick: int) -> mido.MidiTrack:
    """(absolute tick, message) pairs -> a mido track with delta times; at one tick, note-offs come first so that
    a repeated note sounds again."""
    track = mido.MidiTrack()
    now = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], _order(e[1]))):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - now)))
    return track


def _order(msg) -> int:
    return 0 if msg.is_meta else 1 if msg.type == "note_off" else 2


def write_midi(path: str | os.PathLike, text: str, metadata: dict[str, str], tempo_bpm: float = 90) -> Path:
    """Write a music text as a MIDI file (see `midi_bytes`) and `metadata` as the JSON sidecar `<path>.json`,
    both atomically. Tokens outside the grammar are skipped, with a warning counting them."""
    music, skipped = parse(text)
    if skipped:
        log.warning("%s: skipped %d token(s) that do not fit the music grammar", path, skipped)
    path = Path(path)
    atomic_write(path, midi_bytes(music, metadata, tempo_bpm))
    write_sidecar(path, metadata)
    return path


def _open_midi(path: Path) -> mido.MidiFile:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}; expected a readable MIDI file") from e
    if size > MAX_MIDI_BYTES:
        raise DataError(f"{path}: {size} bytes; expected a MIDI file of at most {MAX_MIDI_BYTES} bytes")
    try:
        midi = mido.MidiFile(path)
    except (OSError, EOFError, ValueError, IndexError, KeySignatureError) as e:
        # what mido raises: OSError on a missing MThd, a bad status or data byte, EOFError on a truncated file,
        # IndexError on a meta event shorter than its type needs, KeySignatureError on an unknown key
        raise DataError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e or 'truncated'}); expected a "
                        "Standard MIDI File (.mid)") from e
    if not 0 < midi.ticks_per_beat < 0x8000:
        raise DataError(f"{path}: time division {midi.ticks_per_beat}; expected a positive number of ticks per "
                        "quarter note (SMPTE time codes are not read)")
    return midi


def read_midi(path: str | os.PathLike) -> Music:
    """A MIDI file on the sixteenth grid: notes of each channel (drums, channel 10, left out) as one voice, onsets
    and ends rounded to the nearest sixteenth (a note at least one long, at most MAX_DURATION), bar lines from the
    time signatures (4/4 until the first), up to the last note's end. A note still sounding at the end of its
    track ends there. A file that does not read, or has no notes, is a DataError."""
    path = Path(path)
    midi = _open_midi(path)
    tpb = midi.ticks_per_beat

    def grid(tick: int) -> int:   # the nearest sixteenth, in integers
        return (tick * GRID * 2 + tpb) // (2 * tpb)

    notes, signatures = [], []
    for track in midi.tracks:
        tick, sounding = 0, {}
        for msg in track:
            tick += msg.time
            if msg.type == "time_signature":
                signatures.append((tick, max(1, round(msg.numerator * 4 * GRID / msg.denominator))))
            elif msg.type in ("note_on", "note_off") and msg.channel != 9:
                key = (msg.channel, msg.note)
                if msg.type == "note_on" and msg.velocity > 0:
                    sounding.setdefault(key, deque()).append(tick)
                elif sounding.get(key):
                    notes.append((sounding[key].popleft(), tick, *key))
        notes += [(start, tick, *key) for key, starts in sounding.items() for start in starts]
    if not notes:
        raise DataError(f"{path}: no notes (drums on channel 10 are not read); expected a MIDI file with pitched "
                        "notes")
    voice_of = {c: v for v, c in enumerate(VOICE_CHANNELS)}
    music = Music(tuple(Note(grid(a), voice_of[channel], pitch, min(MAX_DURATION, max(1, grid(b) - grid(a))))
                        for a, b, channel, pitch in notes))
    return Music(music.notes, _bar_lines(signatures, tpb, music.end, grid))


def _bar_lines(signatures: list[tuple[int, int]], tpb: int, end: int, grid) -> tuple[int, ...]:
    """Bar lines before `end`: a bar every 16 sixteenths from 0, and from each time signature on, every bar
    length it gives (a signature starts a bar)."""
    changes = {0: 4 * GRID}
    for tick, length in sorted(signatures):
        changes[grid(tick)] = length
    times = sorted(changes) + [end]
    bars = []
    for start, stop in zip(times, times[1:]):
        bars += range(start, min(stop, end), changes[start])
    return tuple(bars)


def read_midi_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata a genlab MIDI file carries in its text meta event ({} when it has none)."""
    path = Path(path)
    for track in _open_midi(path).tracks:
        for msg in track:
            if msg.type == "text" and msg.text.startswith("{"):
                try:
                    data = json.loads(msg.text)
                except ValueError as e:
                    raise DataError(f"{path}: its text event is not JSON ({e}); expected the metadata genlab "
                                    "writes") from e
                if isinstance(data, dict):
                    return data
    return {}


# ---------------------------------------------------------------------------------------------
# Listening

def render_wav(text: str, sample_rate: int = 22050, tempo_bpm: float = 90) -> np.ndarray:
    """A music text as a mono float32 waveform in [-1, 1] (peak PEAK; empty for a text without notes): each note
    a sum of HARMONICS under an ADSR envelope, voices mixed. Tokens outside the grammar are skipped, with a
    warning counting them; notes starting after MAX_RENDER_SECONDS are left out, with a warning."""
    rate = int(sample_rate)
    if rate != sample_rate or rate < 1000:
        raise UsageError(f"sample_rate={sample_rate!r}; expected a whole number of Hz, at least 1000")
    _check_tempo(tempo_bpm)
    music, skipped = parse(text)
    if skipped:
        log.warning("render_wav: skipped %d token(s) that do not fit the music grammar", skipped)
    step = 60 / tempo_bpm / GRID      # seconds per sixteenth
    notes = [n for n in music.notes if n.onset * step < MAX_RENDER_SECONDS]
    if len(notes) < len(music.notes):
        log.warning("render_wav: %d note(s) start after %d s and are not rendered",
                    len(music.notes) - len(notes), MAX_RENDER_SECONDS)
    if not notes:
        return np.zeros(0, np.float32)
    spans = [(round(n.onset * step * rate), round(n.duration * step * rate)) for n in notes]
    out = np.zeros(max(start + held for start, held in spans) + round(RELEASE * rate), np.float64)
    for n, (start, held) in zip(notes, spans):
        tone = _tone(440.0 * 2 ** ((n.pitch - 69) / 12), held, rate)
        out[start:start + len(tone)] += tone
    return (out * (PEAK / np.abs(out).max())).astype(np.float32)


def _tone(freq: float, held: int, rate: int) -> np.ndarray:
    """One note: `held` samples of attack-decay-sustain, then the release."""
    t = np.arange(held + round(RELEASE * rate)) / rate
    wave = sum(a * np.sin(2 * np.pi * k * freq * t) for k, a in enumerate(HARMONICS, 1) if k * freq < rate / 2)
    hold = held / rate
    envelope = np.interp(t, [0, ATTACK, ATTACK + DECAY], [0, 1, SUSTAIN])    # constant past the decay
    level_at_release = np.interp(hold, [0, ATTACK, ATTACK + DECAY], [0, 1, SUSTAIN])
    release = np.clip(1 - (t - hold) / RELEASE, 0, 1) * level_at_release
    return np.where(t < hold, envelope, release) * wave
