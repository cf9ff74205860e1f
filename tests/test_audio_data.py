"""Audio data: the espeak-ng spoken digits (shapes, determinism, diversity, balance, the cache), the readers'
preprocessing (resampling, trimming, normalisation, mono, length), bad input, augmentation, WAV output,
and the Free Spoken Digit Dataset fetched from a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

import genlab.data.speech as speech
from genlab.audioio import read_wav_metadata, save_wav, wav_bytes
from genlab.config import DataConfig
from genlab.data.audio import AUDIO_BUILTINS, AudioDataset, augment, change_speed, load_audio, shift
from genlab.data.clips import fit_length
from genlab.data.fetch import FetchError, fetch
from genlab.data.images import split
from genlab.data.speech import WORDS, spoken_digits
from genlab.errors import DataError, UsageError
from conftest import needs_espeak
from test_fetch import mirror  # noqa: F401  (the local HTTP server fixture)

RATE = 8000
PEAK = 0.9  # every clip's largest sample after peak normalisation


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))  # zero-padded: 1/8 bin resolution
    return float(np.argmax(spectrum) * rate / (8 * len(x)))


def active(x: np.ndarray) -> tuple[int, int]:
    """First and one-past-last non-zero sample."""
    nz = np.flatnonzero(x)
    return int(nz[0]), int(nz[-1]) + 1


def sound_hz(clip: np.ndarray) -> float:
    """The peak frequency of the clip's sound (its zero padding left out)."""
    start, end = active(clip)
    return peak_hz(clip[start:end], RATE)


def load_one(tmp_path, data: np.ndarray, rate: int, name: str = "a.wav", **cfg) -> np.ndarray:
    """Write one file into a fresh folder, load it with load_audio, return its clip."""
    folder = tmp_path / "clips"
    folder.mkdir(parents=True)
    sf.write(folder / name, data, rate)
    ds = load_audio(DataConfig(name=str(folder), **cfg))
    assert len(ds) == 1 and ds.dropped == 0
    return ds.waves[0].numpy()


# ---------------------------------------------------------------------------------------------
# The spoken-digits built-in

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return spoken_digits(40, RATE, 1.0, seed=0, cache_dir=tmp_path_factory.mktemp("speech"))


@needs_espeak
def test_spoken_digits_shapes_ranges_and_balanced_labels(digits):
    assert digits.waves.shape == (40, RATE) and digits.waves.dtype == torch.float32
    assert digits.sample_rate == RATE and digits.seconds == 1.0 and len(digits) == 40
    assert np.allclose(digits.waves.abs().amax(dim=1), PEAK, atol=1 / 32768)     # every clip peak-normalised
    assert digits.labels.dtype == torch.int64 and digits.classes == WORDS and digits.num_classes == 10
    assert digits.labels.bincount(minlength=10).tolist() == [4] * 10
    assert digits.describe() == {"name": "spoken-digits", "source": digits.source, "count": 40, "sample_rate": RATE,
                                 "seconds": 1.0, "classes": WORDS, "dropped": 0}
    for clip in digits.waves.numpy():     # each word is centred, with silence on both sides
        start, end = active(clip)
        assert abs(start - (RATE - end)) <= 1 and 0 < start


@needs_espeak
def test_same_seed_same_clips_other_seed_other_clips(digits, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="genlab.data"):
        again = spoken_digits(40, RATE, 1.0, seed=0, cache_dir=tmp_path / "a")   # rebuilt in another cache
    assert torch.equal(again.labels, digits.labels)
    differ = (again.waves != digits.waves).any(1).nonzero().flatten().tolist()
    assert not differ, (f"clips {differ} differ between two builds with seed 0 (largest difference "
                        f"{(again.waves - digits.waves).abs().max():.3g}); espeak-ng should be deterministic")
    progress = [r.getMessage() for r in caplog.records if "clips synthesised" in r.getMessage()]
    assert len(progress) == 10 and progress[-1].endswith("40/40 clips synthesised")   # a line every 10%
    other = spoken_digits(40, RATE, 1.0, seed=1, cache_dir=tmp_path / "b")
    assert not torch.equal(other.labels, digits.labels)
    same_digit = [(i, j) for i in range(40) for j in range(40) if digits.labels[i] == other.labels[j]]
    assert not any(torch.equal(digits.waves[i], other.waves[j]) for i, j in same_digit)


@needs_espeak
def test_clips_of_one_digit_differ(digits):
    """Voices, variants, rates and pitches vary: no two clips of a digit match under any time shift, and the
    words' spoken lengths vary."""
    w, y = digits.waves.numpy(), digits.labels.numpy()
    spectra = np.fft.rfft(w, n=2 * RATE)
    norms = np.linalg.norm(w, axis=1)
    for d in range(10):
        idx = np.flatnonzero(y == d)
        for k, i in enumerate(idx):
            for j in idx[k + 1:]:
                xcorr = np.fft.irfft(spectra[i] * np.conj(spectra[j])).max() / (norms[i] * norms[j])
                assert xcorr < 0.8, (d, i, j, xcorr)
        lengths = [np.subtract(*active(w[i])[::-1]) for i in idx]
        assert max(lengths) > 1.15 * min(lengths), (d, lengths)


@needs_espeak
def test_second_load_reads_the_cache_without_running_espeak(digits, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = spoken_digits(40, RATE, 1.0, seed=0, cache_dir=cache)
    (npz,) = (cache / "audio").iterdir()
    with np.load(npz, allow_pickle=False) as z:      # no pickles in the cache
        assert z["pcm"].dtype == np.int16 and json.loads(str(z["params"]))["count"] == 40

    def no_espeak(*args, **kwargs):
        raise AssertionError("espeak-ng ran on a cache hit")

    monkeypatch.setattr(speech.subprocess, "run", no_espeak)
    second = spoken_digits(40, RATE, 1.0, seed=0, cache_dir=cache)
    assert torch.equal(second.waves, first.waves) and torch.equal(second.labels, first.labels)
    # the key covers every parameter: another length is a new build (which would run espeak-ng)
    with pytest.raises(AssertionError, match="espeak-ng ran"):
        spoken_digits(40, RATE, 0.5, seed=0, cache_dir=cache)
    # load_audio reaches the same built-in through data.count, data.sample_rate, data.clip_seconds and data.seed
    monkeypatch.setenv("GENLAB_CACHE", str(cache))
    loaded = load_audio(DataConfig(name="spoken-digits", count=40))
    assert torch.equal(loaded.waves, first.waves) and "spoken-digits" in AUDIO_BUILTINS


def test_missing_espeak_is_a_data_error_naming_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="espeak-ng.*apt-get install espeak-ng"):
        spoken_digits(10, RATE, 1.0, seed=0, cache_dir=tmp_path)


@needs_espeak
def test_an_espeak_failure_is_a_data_error_and_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(speech, "VOICES", ["nosuchvoice"])
    with pytest.raises(DataError, match="espeak-ng failed on .*nosuchvoice.*expected a WAV on stdout"):
        spoken_digits(10, RATE, 1.0, seed=0, cache_dir=tmp_path)
    assert not (tmp_path / "audio").exists()


# ---------------------------------------------------------------------------------------------
# Preprocessing of recordings

@pytest.mark.parametrize("rate", [44100, 22050, 16000, 8000, 4000])
def test_resampling_keeps_a_tones_frequency(tmp_path, rate):
    clip = load_one(tmp_path, tone(440, 0.8, rate), rate)
    assert len(clip) == RATE and abs(sound_hz(clip) - 440) < 2


def test_silence_is_trimmed_and_the_sound_centred(tmp_path):
    quiet = 0.001 * np.random.default_rng(0).standard_normal(RATE // 10)   # -60 dB below the tone: silence
    data = np.concatenate([np.zeros(3 * RATE // 10), tone(300, 0.2, RATE), quiet]).astype(np.float32)
    clip = load_one(tmp_path, data, RATE)
    start, end = active(clip)
    assert abs((end - start) - 0.2 * RATE) <= 2                      # the tone alone is left
    assert abs(start - (RATE - end)) <= 1                             # centred in the 1 s clip


def test_peak_normalisation_mono_mixdown_and_length(tmp_path):
    quiet = load_one(tmp_path, tone(300, 0.5, RATE, amp=0.05), RATE, name="quiet.wav")
    assert np.isclose(np.abs(quiet).max(), PEAK, atol=1e-4)
    left, right = tone(300, 0.5, RATE, amp=0.8), tone(500, 0.5, RATE, amp=0.2)
    stereo = load_one(tmp_path / "s", np.stack([left, right], axis=1), RATE, name="stereo.wav")
    mono = load_one(tmp_path / "m", (left + right) / 2, RATE, name="mono.wav")
    assert np.allclose(stereo, mono, atol=1e-4)                       # the channels' mean
    long = load_one(tmp_path / "l", tone(300, 3.0, RATE), RATE, clip_seconds=0.5)
    assert len(long) == RATE // 2 and np.abs(long[:10]).max() > 0    # cut to length, sound to both edges
    x = np.arange(10, dtype=np.float32) + 1
    assert fit_length(x, 4).tolist() == [4, 5, 6, 7]                  # centred crop
    assert fit_length(x[:3], 7).tolist() == [0, 0, 1, 2, 3, 0, 0]     # centred zero-pad


def test_folders_give_labels_flat_folders_none(tmp_path):
    for cls in ("yes", "no"):
        (tmp_path / "lab" / cls).mkdir(parents=True)
        for i in range(2):
            sf.write(tmp_path / "lab" / cls / f"{i}.flac", tone(200 + 100 * i, 0.3, 16000), 16000)
    sf.write(tmp_path / "lab" / "no" / "x.ogg", tone(250, 0.3, 16000), 16000)
    (tmp_path / "lab" / "yes" / ".hidden.wav").write_bytes(b"skipped")
    ds = load_audio(DataConfig(name=str(tmp_path / "lab"), conditional=True))
    assert ds.classes == ["no", "yes"] and ds.labels.tolist() == [0, 0, 0, 1, 1] and ds.dropped == 0
    flat = tmp_path / "flat"
    flat.mkdir()
    sf.write(flat / "a.wav", tone(300, 0.3, RATE), RATE)
    ds = load_audio(DataConfig(name=str(flat)))
    assert ds.labels is None and ds.classes == [] and ds.num_classes == 0
    with pytest.raises(DataError, match="no labels"):
        load_audio(DataConfig(name=str(flat), conditional=True))
    sf.write(tmp_path / "lab" / "loose.wav", tone(300, 0.3, RATE), RATE)
    with pytest.raises(DataError, match="also audio files at the top level"):
        load_audio(DataConfig(name=str(tmp_path / "lab")))


# ---------------------------------------------------------------------------------------------
# Bad input

def test_bad_files_are_dropped_counted_and_named(tmp_path, caplog):
    folder = tmp_path / "bad"
    folder.mkdir()
    sf.write(folder / "good.wav", tone(300, 0.3, RATE), RATE)
    (folder / "text.wav").write_text("not audio at all, just words in a file named .wav\n" * 5)
    (folder / "empty.flac").write_bytes(b"")
    sf.write(folder / "zero-length.wav", np.zeros(0, np.float32), RATE)
    sf.write(folder / "silent.wav", np.zeros(RATE, np.float32), RATE)
    sf.write(folder / "nan.wav", np.full(RATE, np.nan, np.float32), RATE, subtype="FLOAT")
    header = bytearray(io.BytesIO(wav_bytes(tone(300, 0.3, RATE), RATE, {})).getvalue())
    bad_fmt = header.copy()
    bad_fmt[20:22] = b"\x55\x55"                   # an unknown sample format in the fmt chunk
    (folder / "bad-format.wav").write_bytes(bad_fmt)
    rate_zero = header.copy()
    rate_zero[24:28] = bytes(4)                     # a sample rate of 0 in the header
    (folder / "rate-zero.wav").write_bytes(rate_zero)
    with caplog.at_level(logging.WARNING, logger="genlab.data"):
        ds = load_audio(DataConfig(name=str(folder)))
    assert len(ds) == 1 and ds.dropped == 7 and ds.describe()["dropped"] == 7
    assert "dropped 7 of 8 audio files" in caplog.text
    assert "bad-format.wav" in caplog.text and "empty.flac" in caplog.text   # the first few (sorted) are named
    (folder / "good.wav").unlink()
    with pytest.raises(DataError, match="none of the 7 audio files could be used"):
        load_audio(DataConfig(name=str(folder)))


def test_bad_settings_and_folders_are_data_errors(tmp_path):
    folder = tmp_path / "ok"
    folder.mkdir()
    sf.write(folder / "a.wav", tone(300, 0.3, RATE), RATE)
    for bad in ({"sample_rate": 0}, {"sample_rate": -8000}, {"clip_seconds": 0.0}, {"clip_seconds": float("nan")}):
        with pytest.raises(DataError, match="data.sample_rate|data.clip_seconds"):
            load_audio(DataConfig(name=str(folder), **bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    with pytest.raises(DataError, match="no WAV, FLAC or OGG files found.*expected a folder of WAV/FLAC/OGG"):
        load_audio(DataConfig(name=str(empty)))
    with pytest.raises(DataError, match="unknown audio dataset 'nosuch'.*spoken-digits, fsdd"):
        load_audio(DataConfig(name="nosuch"))
    with pytest.raises(DataError, match="fsdd is not downloaded yet.*genlab data fetch fsdd"):
        load_audio(DataConfig(name="fsdd"))


def _ten_hour_flac(path, rate=44100):
    """A short FLAC whose STREAMINFO header declares 10 hours of samples."""
    sf.write(path, tone(300, 0.1, rate), rate)
    data = bytearray(path.read_bytes())
    at = 4 + 4 + 10  # "fLaC", the block header, then STREAMINFO's block and frame sizes; 36 low bits: total samples
    packed = int.from_bytes(data[at:at + 8], "big")
    packed = (packed & ~(2**36 - 1)) | (10 * 3600 * rate)
    data[at:at + 8] = packed.to_bytes(8, "big")
    path.write_bytes(data)


def test_headers_declaring_too_much_audio_are_refused_before_reading(tmp_path, monkeypatch):
    long_dir, wide_dir = tmp_path / "long", tmp_path / "wide"
    long_dir.mkdir()
    wide_dir.mkdir()
    _ten_hour_flac(long_dir / "ten-hours.flac")
    assert sf.info(long_dir / "ten-hours.flac").frames == 10 * 3600 * 44100
    sf.write(wide_dir / "64-channels.wav", np.zeros((RATE, 64), np.float32), RATE)

    def no_read(*args, **kwargs):
        raise AssertionError("the samples were read")

    monkeypatch.setattr(sf.SoundFile, "read", no_read)
    with pytest.raises(DataError, match=r"ten-hours.flac: reading 1587600000 frames x 1 channels \(3.6e\+04 s"
                                        ".*data.memory_budget_gb=4"):
        load_audio(DataConfig(name=str(long_dir)))
    with pytest.raises(DataError, match="64-channels.wav: reading 8000 frames x 64 channels.*memory_budget_gb=0.001"):
        load_audio(DataConfig(name=str(wide_dir), memory_budget_gb=0.001))


# ---------------------------------------------------------------------------------------------
# Augmentation

def batch(*clips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(clips))[:, None]


def test_augmentation_is_identity_when_off_and_reproducible_when_on():
    x = batch(tone(300, 1.0, RATE), tone(400, 1.0, RATE))
    g = torch.Generator().manual_seed(0)
    assert augment(x, DataConfig(), g) is x
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())   # nothing drawn
    cfg = DataConfig(time_shift=0.1, gain_db=6, noise_snr_db=20, speed=0.1)
    a = augment(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, augment(x, cfg, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, augment(x, cfg, torch.Generator().manual_seed(2)))
    assert a.shape == x.shape and a.abs().max() <= 1
    assert augment(x, DataConfig(gain_db=20), torch.Generator().manual_seed(0)).abs().max() <= 1   # clipped


def test_time_shift_moves_the_onset_with_zero_fill():
    burst = np.zeros(RATE, np.float32)
    burst[3000:4000] = tone(500, 0.125, RATE)
    moved = shift(batch(burst, burst), torch.tensor([250, -400])).numpy()[:, 0]
    assert active(moved[0])[0] == active(burst)[0] + 250 and active(moved[1])[0] == active(burst)[0] - 400
    assert np.array_equal(moved[0][3250:4250], burst[3000:4000])
    edge = shift(batch(np.ones(RATE, np.float32)), torch.tensor([100])).numpy()[0, 0]
    assert (edge[:100] == 0).all() and (edge[100:] == 1).all()
    x = batch(*[burst] * 16)
    onsets = [active(c)[0] - 3000 for c in augment(x, DataConfig(time_shift=0.05), torch.Generator().manual_seed(0))
              .numpy()[:, 0]]
    assert all(-400 <= s <= 400 for s in onsets) and len(set(onsets)) > 8


def test_gain_scales_rms_by_the_drawn_db():
    x = batch(*[tone(300, 1.0, RATE, amp=0.1)] * 8)
    out = augment(x, DataConfig(gain_db=6), torch.Generator().manual_seed(3))
    db = 20 * torch.log10(out.pow(2).mean(-1).sqrt() / x.pow(2).mean(-1).sqrt())[:, 0]
    drawn = (torch.rand(8, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 6
    assert torch.allclose(db, drawn, atol=1e-3) and db.abs().max() <= 6 and db.std() > 1


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_gives_the_requested_snr(snr):
    x = batch(*[tone(f, 1.0, RATE) for f in (200, 300, 700)])
    out = augment(x, DataConfig(noise_snr_db=snr), torch.Generator().manual_seed(0))
    measured = 10 * torch.log10(x.pow(2).mean(-1) / (out - x).pow(2).mean(-1))
    assert (measured - snr).abs().max() < 1, measured


@pytest.mark.parametrize("factor", [0.8, 0.93, 1.1, 1.25])
def test_speed_changes_a_tones_frequency_by_the_factor(factor):
    x = batch(tone(440, 1.0, RATE))
    out = change_speed(x, torch.tensor([factor])).numpy()[0, 0]
    assert len(out) == RATE and abs(sound_hz(out) - 440 * factor) < 2
    drawn = augment(batch(*[tone(440, 1.0, RATE)] * 6), DataConfig(speed=0.1), torch.Generator().manual_seed(0))
    ratios = [sound_hz(c) / 440 for c in drawn.numpy()[:, 0]]
    assert all(0.9 - 0.005 <= r <= 1.1 + 0.005 for r in ratios) and np.ptp(ratios) > 0.02


# ---------------------------------------------------------------------------------------------
# WAV output

def test_wav_round_trip_with_metadata_in_the_file_and_the_sidecar(tmp_path):
    wave = torch.cat([torch.tensor([-1.0, 1.0, 0.0, 0.5]), torch.rand(4000, generator=torch.Generator()
                                                                     .manual_seed(0)) * 2 - 1])
    meta = {"AI-Generated": "true", "Comment": "AI-generated audio made with genlab; not a recording",
            "genlab:seed": "7", "genlab:settings": json.dumps({"label": 3, "note": "é"})}
    path = save_wav(tmp_path / "x.wav", wave[None], RATE, meta)
    back, rate = sf.read(path, dtype="float64")
    info = sf.info(path)
    assert rate == RATE and info.subtype == "PCM_16" and info.channels == 1 and len(back) == len(wave)
    assert np.abs(back - wave.numpy()).max() <= 1 / 32768
    assert read_wav_metadata(path) == meta
    assert json.loads((tmp_path / "x.wav.json").read_text()) == meta
    with sf.SoundFile(path) as f:
        assert f.software.startswith("genlab") and f.title == meta["Comment"]
    assert path.read_bytes() == wav_bytes(wave, RATE, meta)              # the same WAV, in memory
    with pytest.raises(UsageError, match=r"shape \(2, 4\)"):
        wav_bytes(torch.zeros(2, 4), RATE, {})
    with pytest.raises(UsageError, match="comment holds at most"):
        wav_bytes(wave, RATE, {"settings": "x" * 3000})


# ---------------------------------------------------------------------------------------------
# The dataset type

def test_subset_split_and_fingerprint():
    waves = torch.rand(10, 100) * 2 - 1
    ds = AudioDataset(waves, torch.arange(10) % 2, ["a", "b"], 8000, "x", "src", dropped=3)
    train, val = split(ds, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2 and isinstance(val, AudioDataset)
    assert val.sample_rate == 8000 and val.dropped == 3 and val.classes == ["a", "b"]
    assert torch.equal(torch.cat([train.waves, val.waves]).sort(0).values, waves.sort(0).values)
    fp = ds.fingerprint()
    assert fp == AudioDataset(waves.clone(), torch.arange(10) % 2, ["a", "b"], 8000).fingerprint()
    assert fp != AudioDataset(waves, torch.arange(10) % 2, ["a", "b"], 16000).fingerprint()
    assert fp != AudioDataset(waves, torch.arange(10) % 3, ["a", "b", "c"], 8000).fingerprint()
    with pytest.raises(DataError, match=r"\(N, T\)"):
        AudioDataset(waves[None])


# ---------------------------------------------------------------------------------------------
# The Free Spoken Digit Dataset, from a local HTTP server

def _fsdd_archive(path, extra: str | None = None) -> dict[str, int]:
    """v1.0.9.tar.gz in the real layout: free-spoken-digit-dataset-1.0.9/recordings/{digit}_{speaker}_{index}.wav
    beside the repository's other files; returns file name -> digit."""
    labels, top = {}, "free-spoken-digit-dataset-1.0.9"
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add(f"{top}/README.md", b"# Free Spoken Digit Dataset\n")
        add(f"{top}/utils/trimmer.py", b"print('not ours')\n")
        add(f"{top}/docs/example.wav", b"not a recording of the set")
        for digit in (0, 3, 7, 9):
            for speaker in ("jackson", "theo"):
                name = f"{digit}_{speaker}_{digit + 1}.wav"
                buf = io.BytesIO()
                sf.write(buf, tone(200 + 50 * digit, 0.3, RATE), RATE, format="WAV", subtype="PCM_16")
                add(f"{top}/recordings/{name}", buf.getvalue())
                labels[name] = digit
        if extra:
            add(extra, b"escaped")
    return labels


def test_fsdd_fetch_then_load(tmp_path, mirror, monkeypatch):  # noqa: F811
    url, _, _, hits = mirror
    labels = _fsdd_archive(tmp_path / "mirror" / "v1.0.9.tar.gz")
    sha = hashlib.sha256((tmp_path / "mirror" / "v1.0.9.tar.gz").read_bytes()).hexdigest()
    folder = fetch("fsdd", cache_dir=tmp_path / "cache", base_url=url, checksums={"v1.0.9.tar.gz": sha},
                   progress=False)
    assert hits == ["/v1.0.9.tar.gz"]
    assert sorted(p.name for p in (folder / "recordings").iterdir()) == sorted(labels)
    assert sorted(p.name for p in folder.iterdir()) == ["recordings", "v1.0.9.tar.gz"]
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    ds = load_audio(DataConfig(name="fsdd"))
    assert ds.name == "fsdd" and ds.classes == WORDS and ds.waves.shape == (8, RATE) and ds.dropped == 0
    assert ds.labels.tolist() == [labels[n] for n in sorted(labels)]
    assert abs(sound_hz(ds.waves[-1].numpy()) - 650) < 2         # 9_theo_10.wav, a 650 Hz tone

    with pytest.raises(FetchError, match="SHA-256 mismatch"):
        fetch("fsdd", cache_dir=tmp_path / "other", base_url=url, checksums={"v1.0.9.tar.gz": "0" * 64},
              progress=False)
    assert not (tmp_path / "other" / "datasets" / "fsdd" / "recordings").exists()


def test_fsdd_archive_climbing_out_is_refused(tmp_path, mirror):  # noqa: F811
    url, _, _, _ = mirror
    _fsdd_archive(tmp_path / "mirror" / "v1.0.9.tar.gz", extra="../../escape.wav")
    sha = hashlib.sha256((tmp_path / "mirror" / "v1.0.9.tar.gz").read_bytes()).hexdigest()
    with pytest.raises(FetchError, match="refusing to unpack member '../../escape.wav'"):
        fetch("fsdd", cache_dir=tmp_path / "cache", base_url=url, checksums={"v1.0.9.tar.gz": sha}, progress=False)
    assert not (tmp_path / "cache" / "datasets" / "fsdd" / "recordings").exists()
