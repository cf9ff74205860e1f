"""Symbolic music: the text form's exact round trips (events, MIDI), the chorales' transposition, cache and split,
the music tokenizer, MIDI provenance, the synthesiser's pitches, the music metrics, and bad MIDI input."""

from __future__ import annotations

import json
import logging
import random

import mido
import numpy as np
import pytest

from genlab.data import music as chorales_mod
from genlab.data.music import Chorale, bach_chorales, read_midi_folder, shift_to_c, split_chorales
from genlab.data.tokenizers import PAD, SPECIALS, UNK, MusicTokenizer, tokenizer_from_json, train_tokenizer
from genlab.errors import DataError
from genlab.evaluation import music_metrics as mm
from genlab.musicio import (MUSIC_NOTICE, Music, Note, find_key, from_text, key_of, midi_bytes, parse, read_midi,
                            read_midi_metadata, render_wav, to_text, write_midi)

LIMIT = 3   # chorale files parsed: bwv1.6 (F major, with a horn part left out), bwv10.7 (G minor), bwv101.7 (D minor)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("music-cache")


@pytest.fixture(scope="module")
def as_written(cache):
    return bach_chorales("none", cache_dir=cache, limit=LIMIT)


@pytest.fixture(scope="module")
def in_c(cache):
    return bach_chorales("c", cache_dir=cache, limit=LIMIT)


def random_music(rng: random.Random, notes: int = 60) -> Music:
    return Music(tuple(Note(rng.randrange(200), rng.randrange(15), rng.randrange(128), rng.randint(1, 64))
                       for _ in range(notes)), tuple(rng.sample(range(0, 260), 12)))


# ---------------------------------------------------------------------------------------------
# The text form

def test_a_chorale_round_trips_exactly_through_events_and_midi(as_written, tmp_path):
    assert [c.id for c in as_written] == ["bwv1.6", "bwv10.7", "bwv101.7"]
    for c in as_written:
        music = from_text(c.text)
        assert {n.voice for n in music.notes} == {0, 1, 2, 3} and len(music.notes) > 100 and music.bars[0] == 0
        assert to_text(music) == c.text                              # text -> events -> text
        assert from_text(to_text(music)) == music                    # events -> text -> events
        path = write_midi(tmp_path / f"{c.id}.mid", c.text, {"id": c.id})
        assert read_midi(path) == music and to_text(read_midi(path)) == c.text    # text -> MIDI -> text


def test_the_soprano_is_voice_0_and_the_bass_voice_3(as_written):
    for c in as_written:
        notes = from_text(c.text).notes
        means = [np.mean([n.pitch for n in notes if n.voice == v]) for v in range(4)]
        assert means == sorted(means, reverse=True)


def test_any_events_round_trip_through_text_in_canonical_order():
    rng = random.Random(0)
    for _ in range(50):
        music = random_music(rng)
        assert from_text(to_text(music)) == music
    chord = Music((Note(40, 2, 64, 4), Note(0, 0, 60, 8), Note(40, 2, 60, 4), Note(0, 0, 60, 3)), (0, 16, 32))
    assert chord.notes == (Note(0, 0, 60, 8), Note(40, 2, 60, 4), Note(40, 2, 64, 4))   # sorted; the repeat merged
    assert to_text(chord) == "bar v0 p60 d8 t16 bar t16 bar t8 v2 p60 d4 v2 p64 d4"     # a gap of 40: 16 + 16 + 8


@pytest.mark.parametrize("text", [
    "bar v0 p60 d4 t4 bar v0 p62 d16 t16 bar v0 p64 d12 t12 bar v1 p40 d32",   # pickup, 4/4, 3/4, a long last bar
    "bar v0 p0 d1 v14 p127 d64 t16 t16 t16 t16 t1 v3 p60 d1",                   # one bar, as long as the piece
    "bar t16 t16 t16 t16 t16 t16 t16 t16 t16 t16 t16 t16 t16 t16 t16 t16 bar v0 p60 d4 v0 p64 d4"])  # a bar of 256
def test_irregular_bars_round_trip_through_midi(tmp_path, text):
    assert to_text(from_text(text)) == text
    assert to_text(read_midi(write_midi(tmp_path / "x.mid", text, {}))) == text


def test_a_repeated_note_is_released_before_it_sounds_again(tmp_path):
    path = write_midi(tmp_path / "r.mid", "bar v0 p60 d4 t4 v0 p60 d4", {})
    voice = mido.MidiFile(path).tracks[1]
    assert [(m.type, m.time) for m in voice if not m.is_meta] == [("note_on", 0), ("note_off", 480),
                                                                   ("note_on", 0), ("note_off", 480)]


def test_events_out_of_range_are_refused():
    for note in (Note(-1, 0, 60, 4), Note(0, 15, 60, 4), Note(0, 0, 128, 4), Note(0, 0, 60, 0), Note(0, 0, 60, 65)):
        with pytest.raises(DataError, match="out of range"):
            Music((note,))


def test_a_malformed_text_is_skipped_and_counted_or_refused_when_strict():
    music, skipped = parse("bar v0 p72 t4 v1 p60 d4 p3 hello v2 d4 v0 p60 d200 t0 v3 p48")
    # v0 p72 (broken by t4), p3, hello, v2 (broken by d4), d4, v0 p60 d200 (d200 is not a token: 3), t0, v3 p48
    assert music == Music((Note(4, 1, 60, 4),), (0,)) and skipped == 2 + 1 + 1 + 1 + 1 + 3 + 1 + 2
    assert parse("")[0] == Music(()) and parse("")[1] == 0
    with pytest.raises(DataError, match="token 2 't4' breaks off the note 'v0 p72'"):
        from_text("v0 p72 t4")
    with pytest.raises(DataError, match="'x' is not a music token"):
        from_text("bar x")


# ---------------------------------------------------------------------------------------------
# The chorales: transposition, augmentation, cache, split

def test_shift_to_c_takes_every_key_signature_to_none():
    for sharps in range(-7, 8):
        shift = shift_to_c(sharps)
        assert -6 <= shift <= 5 and (7 * sharps + shift) % 12 == 0


def test_transposing_to_c_keeps_the_intervals_and_moves_the_key(as_written, in_c):
    keys = []
    for a, c in zip(as_written, in_c):
        ma, mc = from_text(a.text), from_text(c.text)
        assert a.id == c.id and c.shift != 0 and len(ma.notes) == len(mc.notes)
        assert all(y == x._replace(pitch=x.pitch + c.shift) for x, y in zip(ma.notes, mc.notes))
        assert ma.bars == mc.bars
        assert np.array_equal(mm.interval_histogram([ma]), mm.interval_histogram([mc]))
        (tonic_a, mode_a), (tonic_c, mode_c) = key_of(ma), key_of(mc)
        assert mode_a == mode_c and (tonic_a + c.shift) % 12 == tonic_c
        keys.append((tonic_c, mode_c))
    assert keys == [(0, "major"), (9, "minor"), (9, "minor")]   # F major -> C major; G and D minor -> A minor


def test_augmenting_gives_every_key_that_stays_in_the_voices_ranges(cache, as_written):
    augmented = bach_chorales("augment", cache_dir=cache, limit=LIMIT)
    written = {c.id: from_text(c.text) for c in as_written}
    ranges = {v: (min(n.pitch for m in written.values() for n in m.notes if n.voice == v),
                  max(n.pitch for m in written.values() for n in m.notes if n.voice == v)) for v in range(4)}
    for c in augmented:
        music = from_text(c.text)
        assert music == written[c.id].transpose(c.shift) and c.primary == (c.shift == 0)
        assert all(ranges[n.voice][0] <= n.pitch <= ranges[n.voice][1] for n in music.notes)
    for cid, music in written.items():   # every shift that fits is there
        fits = [s for s in range(-6, 6) if all(ranges[n.voice][0] <= n.pitch + s <= ranges[n.voice][1]
                                                for n in music.notes)]
        assert sorted(c.shift for c in augmented if c.id == cid) == fits and 0 in fits
    assert len(augmented) > len(as_written)


def test_the_parse_is_cached_as_json_and_rebuilt_when_damaged(cache, as_written, monkeypatch, caplog):
    files = list((cache / "music").glob("bach-chorales-*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["params"]["music21"] and [c["id"] for c in data["chorales"]] == [c.id for c in as_written]

    def no_parsing(path):
        raise AssertionError("parsed again although the cache holds the parse")

    with monkeypatch.context() as m:
        m.setattr(chorales_mod, "_parse_chorale", no_parsing)
        assert bach_chorales("none", cache_dir=cache, limit=LIMIT) == as_written
    damaged = dict(data, chorales=[dict(data["chorales"][0], text="v0 p60 oops")])
    files[0].write_text(json.dumps(damaged))
    with caplog.at_level(logging.INFO, logger="genlab.data"):
        assert bach_chorales("none", cache_dir=cache, limit=LIMIT) == as_written
    assert "rebuilding" in caplog.text and "files parsed" in caplog.text and "3 four-part chorales kept" in caplog.text
    assert json.loads(files[0].read_text()) == data
    import music21
    monkeypatch.setattr(music21, "__version__", "0.0.1")   # another music21 parses anew, into another file
    assert bach_chorales("none", cache_dir=cache, limit=LIMIT) == as_written
    new = set((cache / "music").glob("bach-chorales-*.json")) - set(files)
    assert [json.loads(f.read_text())["params"]["music21"] for f in new] == ["0.0.1"]


def test_a_bad_transpose_mode_is_refused(cache):
    with pytest.raises(DataError, match="transpose='d'; expected one of c, none, augment"):
        bach_chorales("d", cache_dir=cache, limit=LIMIT)


def pieces(n: int, versions: int = 3) -> list[Chorale]:
    return [Chorale(f"bwv{i}", f"bar v0 p{60 + s} d4", s, s == 0) for i in range(n) for s in range(versions)]


def test_the_split_is_by_chorale_and_deterministic():
    corpus = pieces(40)
    train, val = split_chorales(corpus, 0.1, seed=0)
    train_ids, val_ids = {c.id for c in train}, {c.id for c in val}
    assert len(val_ids) == 4 and not train_ids & val_ids and train_ids | val_ids == {c.id for c in corpus}
    assert all(c.primary for c in val) and len(val) == 4            # validation: the as-written version only
    assert len(train) == 36 * 3                                      # training: every version
    shuffled = random.Random(1).sample(corpus, len(corpus))
    assert {c.id for c in split_chorales(shuffled, 0.1, seed=0)[1]} == val_ids
    assert split_chorales(corpus, 0.1, seed=0) == (train, val)
    assert {c.id for c in split_chorales(corpus, 0.1, seed=1)[1]} != val_ids
    assert split_chorales(corpus, 0.0, seed=0) == (corpus, [])
    with pytest.raises(DataError, match="val_fraction"):
        split_chorales(corpus, 1.0)
    with pytest.raises(DataError, match="at least one piece on each side"):
        split_chorales(pieces(1), 0.5)


# ---------------------------------------------------------------------------------------------
# The tokenizer

def test_the_music_tokenizer_round_trips_and_rejects_unknown_tokens(in_c, caplog):
    tok = train_tokenizer("music", [c.text for c in in_c])
    assert isinstance(tok, MusicTokenizer) and tok.kind == "music"
    assert tok.tokens[0] == "bar" and tok.tokens[1] == "t1" and tok.tokens[-1].startswith("d")
    assert tok.vocab_size == len(SPECIALS) + len({w for c in in_c for w in c.text.split()})
    for c in in_c:
        ids = tok.encode(c.text, strict=True)
        assert min(ids) >= len(SPECIALS) and tok.decode(ids) == c.text
        assert tok.decode([PAD, 1, 2] + ids + [UNK, 10_000]) == c.text   # specials and ids beyond are skipped
    again = tokenizer_from_json(tok.to_json())
    assert isinstance(again, MusicTokenizer) and again.tokens == tok.tokens
    assert again.encode(in_c[0].text) == tok.encode(in_c[0].text)
    with pytest.raises(ValueError, match="'p127'"):
        tok.encode("bar v0 p127 d4", strict=True)
    with caplog.at_level(logging.WARNING, logger="genlab.data"):
        assert tok.encode("bar v0 p127 d4")[2] == UNK
    assert "'p127'" in caplog.text


def test_the_music_tokenizer_takes_only_music_texts():
    with pytest.raises(ValueError, match="not music tokens: 'hello'"):
        train_tokenizer("music", ["bar v0 p60 d4 hello"])
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer("music", [" "])
    with pytest.raises(ValueError, match="list of the music vocabulary"):
        tokenizer_from_json(json.dumps({"type": "music", "tokens": "bar"}))


# ---------------------------------------------------------------------------------------------
# MIDI out, provenance, listening

def test_midi_metadata_comes_back_from_the_file_and_the_sidecar(tmp_path):
    meta = {"AI-Generated": "true", "genlab:run": "bach-gpt", "genlab:seed": "7", "note": "Grüße"}
    path = write_midi(tmp_path / "s.mid", "bar v0 p72 d4 v3 p48 d4", meta, tempo_bpm=120)
    assert read_midi_metadata(path) == meta
    assert json.loads((tmp_path / "s.mid.json").read_text()) == meta
    messages = [m for track in mido.MidiFile(path).tracks for m in track]
    assert any(m.type == "copyright" and m.text == MUSIC_NOTICE for m in messages)
    assert "AI-generated" in MUSIC_NOTICE
    assert [m.tempo for m in messages if m.type == "set_tempo"] == [mido.bpm2tempo(120)]
    assert [m.channel for m in messages if m.type == "note_on"] == [0, 3]
    plain = tmp_path / "plain.mid"
    mido.MidiFile(tracks=[mido.MidiTrack([mido.Message("note_on", note=60), mido.Message("note_off", note=60,
                                                                                          time=480)])]).save(plain)
    assert read_midi_metadata(plain) == {}


def test_write_midi_skips_malformed_tokens_and_counts_them(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="genlab.music"):
        path = write_midi(tmp_path / "g.mid", "bar v0 p60 d4 v1 junk t4 v0 p62 d4 v2", {})
    assert to_text(read_midi(path)) == "bar v0 p60 d4 t4 v0 p62 d4" and "skipped 3 token(s)" in caplog.text
    long_bar = "bar " + "t16 " * 16 + "t1 bar v0 p60 d4"     # bar lines 257 sixteenths apart: no time signature says it
    assert read_midi(write_midi(tmp_path / "long.mid", long_bar, {})).notes == from_text(long_bar).notes


def spectral_peaks(wave: np.ndarray, rate: int, count: int) -> list[float]:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    freqs = np.fft.rfftfreq(len(wave), 1 / rate)
    local = np.flatnonzero((spectrum[1:-1] > spectrum[:-2]) & (spectrum[1:-1] >= spectrum[2:])) + 1
    return sorted(freqs[local[np.argsort(spectrum[local])[-count:]]].tolist())


def test_render_wav_of_a_chord_peaks_at_its_notes(caplog):
    rate = 22050
    wave = render_wav("bar v0 p67 d16 v1 p64 d16 v2 p60 d16", sample_rate=rate, tempo_bpm=60)   # C4 E4 G4, 4 s
    assert wave.dtype == np.float32 and np.abs(wave).max() == pytest.approx(0.9) and len(wave) > 4 * rate
    expected = [440 * 2 ** ((m - 69) / 12) for m in (60, 64, 67)]    # 261.6, 329.6, 392.0 Hz
    assert spectral_peaks(wave, rate, 3) == pytest.approx(expected, abs=1.0)
    low = render_wav("bar v0 p48 d16", sample_rate=rate, tempo_bpm=60)    # C3 alone: its strongest peak
    assert spectral_peaks(low, rate, 1) == pytest.approx([130.81], abs=1.0)
    with caplog.at_level(logging.WARNING, logger="genlab.music"):
        garbled = render_wav("v0 p60 d4 p61 zz t4 v1", sample_rate=8000)
    assert len(garbled) > 0 and np.isfinite(garbled).all() and "skipped 3 token(s)" in caplog.text
    assert render_wav("t4 nonsense").shape == (0,)


# ---------------------------------------------------------------------------------------------
# The metrics

def test_identical_sets_score_overlap_one_and_copy_share_one(in_c):
    texts = [c.text for c in in_c]
    m = mm.music_metrics(texts, texts, texts)
    for key in ("pitch_class_overlap", "interval_overlap", "duration_overlap", "copy_share"):
        assert m[key] == pytest.approx(1.0)
    assert m["polyphony"] == m["polyphony_data"] and 3.5 < m["polyphony"] <= 4.0
    assert m["note_density"] == m["note_density_data"] and m["skipped_token_share"] == 0
    others = mm.music_metrics(texts[:1], texts, texts[1:])
    assert others["copy_share"] < 0.2 and others["pitch_class_overlap"] < 1


def test_a_tritone_transposition_lowers_the_pitch_class_overlap_only(in_c):
    texts = [c.text for c in in_c]
    tritone = [to_text(from_text(t).transpose(6)) for t in texts]
    m = mm.music_metrics(tritone, texts)
    assert m["pitch_class_overlap"] < 0.6
    assert m["interval_overlap"] == pytest.approx(1.0) and m["duration_overlap"] == pytest.approx(1.0)


def test_random_notes_score_far_below_chorales_on_in_key_share(in_c):
    rng = random.Random(0)
    noise = [to_text(Music(tuple(Note(4 * i, rng.randrange(4), rng.randrange(40, 80), 4) for i in range(200)), (0,)))
             for _ in range(len(in_c))]
    real = mm.in_key_share([from_text(c.text) for c in in_c])
    assert real > 0.85
    assert mm.in_key_share([from_text(t) for t in noise]) < real - 0.2


def test_key_finding_names_scales_in_every_key():
    for tonic in range(12):
        major = np.zeros(12)
        major[[(tonic + s) % 12 for s in (0, 2, 4, 5, 7, 9, 11)]] = 1
        major[tonic] += 2                         # the tonic, and its fifth, held longest
        major[(tonic + 7) % 12] += 1
        assert find_key(major) == (tonic, "major")
        minor = np.zeros(12)
        minor[[(tonic + s) % 12 for s in (0, 2, 3, 5, 7, 8, 11)]] = 1
        minor[tonic] += 2
        minor[(tonic + 7) % 12] += 1
        assert find_key(minor) == (tonic, "minor")


def test_the_histograms_count_what_they_say():
    music = from_text("bar v0 p72 d4 v1 p56 d8 v2 p48 d2 t4 v0 p79 d4 t4 v0 p60 d4 v1 p57 d4")
    assert mm.pitch_class_histogram([music]).tolist() == [3, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0]   # C C C G G# A
    steps = np.zeros(25)
    steps[[12 + 7, 12 - 12, 12 + 1]] = 1      # soprano 72 -> 79 -> 60 (-19, clipped to -12), alto 56 -> 57
    assert mm.interval_histogram([music]).tolist() == steps.tolist()
    assert mm.duration_histogram([music])[[1, 3, 7]].tolist() == [1, 4, 1] and mm.duration_histogram([music]).sum() == 6


def test_polyphony_density_and_copy_share_on_known_texts():
    block = from_text("bar v0 p72 d16 v1 p67 d16 v2 p64 d16 v3 p48 d16 t16 bar v0 p74 d8")   # 5 notes, 2 bars
    assert mm.polyphony([block]) == pytest.approx((4 * 16 + 8) / 24)
    assert mm.note_density([block]) == 2.5
    assert mm.polyphony([from_text("bar v0 p60 d4 t8 v0 p62 d4")]) == 1   # the rest between the notes does not count
    assert mm.note_density([Music((Note(0, 0, 60, 4), Note(40, 0, 60, 4)))]) == pytest.approx(2 / 3)  # no bars: 44/16
    assert mm.units("bar v0 p60 d4 t16 t4 v1 p60 d4 t2 bar") == [("bar", "v0", "p60", "d4"),
                                                                  ("t16", "t4", "v1", "p60", "d4"), ("t2", "bar")]
    a = " ".join(f"t4 v0 p{60 + i} d4" for i in range(10))
    b = " ".join(f"t4 v0 p{70 + i} d4" for i in range(10))
    assert mm.copy_share([a], [a], n=8) == 1 and mm.copy_share([b], [a], n=8) == 0
    assert mm.copy_share([a], [a], n=20) == 0     # shorter than n units: nothing to copy


# ---------------------------------------------------------------------------------------------
# Reading MIDI files

def midi_file(tracks: list[list], ticks_per_beat: int = 96, kind: int = 1) -> mido.MidiFile:
    return mido.MidiFile(type=kind, ticks_per_beat=ticks_per_beat, tracks=[mido.MidiTrack(t) for t in tracks])


def test_read_midi_puts_any_file_on_the_sixteenth_grid(tmp_path):
    path = tmp_path / "other.mid"
    midi_file([[mido.MetaMessage("time_signature", numerator=3, denominator=4)],
               [mido.Message("note_on", channel=2, note=60, velocity=90, time=0),
                mido.Message("note_on", channel=2, note=64, velocity=90, time=0),
                mido.Message("note_on", channel=2, note=60, velocity=0, time=50),    # 50 ticks: 2.08 -> 2
                mido.Message("note_off", channel=2, note=64, time=46),               # 96 ticks: 4
                mido.Message("note_on", channel=9, note=36, velocity=90, time=0),    # drums: left out
                mido.Message("note_on", channel=0, note=72, velocity=90, time=300)],  # never ends: to the track's end
               [mido.Message("note_on", channel=1, note=50, time=1000), mido.Message("note_off", channel=1, note=50,
                                                                                     time=5000)]]).save(path)
    music = read_midi(path)
    # tick 396 is 16.5 sixteenths: a half rounds up; tick 1000 is 41.7 -> 42, and 5,000 ticks long clips to 64
    assert music.notes == (Note(0, 2, 60, 2), Note(0, 2, 64, 4), Note(17, 0, 72, 1), Note(42, 1, 50, 64))
    assert music.bars == tuple(range(0, 106, 12))     # 3/4: a bar every 12 sixteenths, until the last note ends


BAD_MIDI = {
    "not-midi.mid": b"hello, this is text",
    "empty.mid": b"",
    "header-only.mid": b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0",
    "truncated.mid": b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x00\x20\x00\x90\x3c",
    "bad-data-byte.mid": b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x08\x00\x90\xfc\x40"
                         b"\x00\xff\x2f\x00",                            # a note number of 252
    "zero-division.mid": b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x00MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
    "smpte.mid": b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\xe7\x28MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
    "bad-key.mid": b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x0a\x00\xff\x59\x02\x09\x00"
                   b"\x00\xff\x2f\x00",                                  # a key signature of 9 sharps
    "short-tempo.mid": b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x09\x00\xff\x51\x01\x00"
                       b"\x00\xff\x2f\x00",                              # a tempo event of 1 byte, not 3
}


def bad_folder(root):
    root.mkdir()
    for name, data in BAD_MIDI.items():
        (root / name).write_bytes(data)
    midi_file([[mido.MetaMessage("track_name", name="silent")]]).save(root / "no-notes.mid")
    midi_file([[mido.Message("note_on", channel=9, note=36), mido.Message("note_off", channel=9, note=36,
                                                                            time=96)]]).save(root / "drums.mid")


@pytest.mark.parametrize("name", sorted(BAD_MIDI) + ["no-notes.mid", "drums.mid"])
def test_every_bad_midi_file_is_a_data_error_naming_it(tmp_path, name):
    bad_folder(tmp_path / "bad")
    with pytest.raises(DataError, match=name):
        read_midi(tmp_path / "bad" / name)


def test_a_midi_folder_keeps_the_good_files_and_counts_the_bad(tmp_path, caplog, monkeypatch):
    root = tmp_path / "songs"
    bad_folder(root)
    (root / "sub").mkdir()
    write_midi(root / "sub" / "good.MIDI", "bar v0 p60 d4 v1 p55 d8", {})
    write_midi(root / ".hidden.mid", "bar v0 p60 d4", {})
    (root / "notes.txt").write_text("not a MIDI file, and not named like one")
    with caplog.at_level(logging.WARNING, logger="genlab.data"):
        got = read_midi_folder(root)
    assert got == [Chorale("sub/good.MIDI", "bar v0 p60 d4 v1 p55 d8")]
    assert "dropped 11 of 12 MIDI files" in caplog.text and "bad-data-byte.mid" in caplog.text and " ..." in caplog.text
    monkeypatch.setattr("genlab.musicio.MAX_MIDI_BYTES", 100)
    with pytest.raises(DataError, match="bytes; expected a MIDI file of at most 100"):
        read_midi(root / "sub" / "good.MIDI")


def test_a_midi_folder_with_nothing_readable_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .mid or .midi files found.*expected a folder of Standard MIDI Files"):
        read_midi_folder(tmp_path / "empty")
    bad_folder(tmp_path / "bad")
    with pytest.raises(DataError, match="none of the 11 MIDI files could be read"):
        read_midi_folder(tmp_path / "bad")
    with pytest.raises(DataError, match="not a folder"):
        read_midi_folder(tmp_path / "bad" / "empty.mid")


def test_midi_bytes_refuses_a_bad_tempo():
    with pytest.raises(ValueError, match="tempo_bpm"):
        midi_bytes(Music((Note(0, 0, 60, 4),)), {}, tempo_bpm=0)
