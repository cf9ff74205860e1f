"""The built-in `spoken-digits`: the ten English digit words, synthesised offline with espeak-ng.

Each clip draws, from the seed, a voice (English accents), a voice variant (male m1..m7, female f1..f5), a
speaking rate, a pitch and an amplitude, so that the clips of one digit differ the way recordings of
several speakers do. espeak-ng's 22,050 Hz output goes through the shared preprocessing (genlab.data.clips:
silence trimmed, resampled, peak-normalised, centred), is stored as 16-bit values, and is cached as an
.npz under `<cache>/audio/`, keyed by a hash of every parameter (a second load never runs espeak-ng).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from genlab.data.clips import PEAK, SILENCE_DB, AudioDataset, clip_length, prepare_clip
from genlab.data.fetch import cache_root
from genlab.data.progress import counted
from genlab.errors import DataError
from genlab.runs import atomic_write

log = logging.getLogger("genlab.data")

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]  # index = label
VOICES = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
VARIANTS = [f"m{i}" for i in range(1, 8)] + [f"f{i}" for i in range(1, 6)]
RATE_WPM = (120, 200)   # espeak-ng -s, words per minute (its default is 175)
PITCH = (25, 75)        # espeak-ng -p, 0..99 (default 50)
AMPLITUDE = (60, 160)   # espeak-ng -a, 0..200 (default 100); loud settings clip inside espeak-ng, a timbre of its own
RECIPE = 1              # bump when the synthesis or preprocessing changes, so that old caches are not reused
WORKERS = 2             # espeak-ng processes run at once
PCM_SCALE = 32768       # clips are stored as int16 values / PCM_SCALE
INSTALL = "apt-get install espeak-ng"


def spoken_digits(count: int, sample_rate: int, clip_seconds: float, seed: int,
                  cache_dir: str | Path | None = None) -> AudioDataset:
    """`count` clips of the digit words (label = digit, classes balanced), (count, sample_rate * clip_seconds) in
    [-1, 1]; the same arguments give the same clips. Built once, then read from the cache."""
    if count < 1:
        raise DataError(f"data.count={count}; expected a positive number of spoken-digit clips to synthesise")
    length = clip_length(sample_rate, clip_seconds)
    params = {"recipe": RECIPE, "count": count, "sample_rate": sample_rate, "clip_seconds": clip_seconds,
              "seed": seed, "voices": VOICES, "variants": VARIANTS, "rate_wpm": RATE_WPM, "pitch": PITCH,
              "amplitude": AMPLITUDE, "peak": PEAK, "silence_db": SILENCE_DB}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / "audio" / f"spoken-digits-{key}.npz"
    cached = _read_cache(path, count, length)
    if cached is None:
        cached = _build(count, sample_rate, length, seed, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, pcm=cached[0], labels=cached[1], params=np.asarray(json.dumps(params, sort_keys=True)))
        atomic_write(path, buf.getvalue())
    pcm, labels = cached
    waves = torch.from_numpy(pcm.astype(np.float32) / PCM_SCALE)
    return AudioDataset(waves, torch.from_numpy(labels), list(WORDS), sample_rate, "spoken-digits",
                        f"espeak-ng, synthesised (seed {seed}); cached at {path}")


def _read_cache(path: Path, count: int, length: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached int16 clips and labels, or None when there is no cache file or it is damaged (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            pcm, labels = z["pcm"], z["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("rebuilding %s: the cached file cannot be read (%s)", path, e)
        return None
    if (pcm.shape != (count, length) or pcm.dtype != np.int16 or labels.shape != (count,)
            or labels.dtype != np.int64 or labels.min() < 0 or labels.max() >= len(WORDS)):
        log.warning("rebuilding %s: the cached arrays have shapes %s and %s; expected (%d, %d) int16 and (%d,) "
                    "int64 labels", path, pcm.shape, labels.shape, count, length, count)
        return None
    return pcm, labels


def _build(count: int, sample_rate: int, length: int, seed: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Draw every clip's settings from the seed, synthesise and preprocess them (WORKERS at a time)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise DataError(f"spoken-digits needs espeak-ng to synthesise its clips, and it is not installed; expected "
                        f"espeak-ng on PATH (Debian/Ubuntu: `{INSTALL}`), or a cache built elsewhere at {path}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(WORDS)).astype(np.int64)
    voices = rng.integers(len(VOICES), size=count)
    variants = rng.integers(len(VARIANTS), size=count)
    rates = rng.integers(RATE_WPM[0], RATE_WPM[1] + 1, size=count)
    pitches = rng.integers(PITCH[0], PITCH[1] + 1, size=count)
    amplitudes = rng.integers(AMPLITUDE[0], AMPLITUDE[1] + 1, size=count)
    commands = [[espeak, "--stdout", "-v", f"{VOICES[v]}+{VARIANTS[m]}", "-s", str(s), "-p", str(p), "-a", str(a),
                 WORDS[y]] for y, v, m, s, p, a in zip(labels, voices, variants, rates, pitches, amplitudes)]
    pcm = np.empty((count, length), np.int16)
    log.info("synthesising %d spoken-digit clips with espeak-ng (once; cached at %s)", count, path)
    pool = ThreadPoolExecutor(WORKERS)
    try:
        with counted(count, "spoken-digits", "clips synthesised") as advance:
            for i, clip in enumerate(pool.map(lambda c: _synthesise(c, sample_rate, length), commands)):
                pcm[i] = np.clip(np.round(clip * PCM_SCALE), -PCM_SCALE, PCM_SCALE - 1)
                advance()
    finally:  # after an error or Ctrl-C, the clips not started yet are not synthesised
        pool.shutdown(cancel_futures=True)
    return pcm, labels


def _synthesise(command: list[str], sample_rate: int, length: int) -> np.ndarray:
    """Run one espeak-ng command and preprocess its WAV into a (length,) clip."""
    done = subprocess.run(command, capture_output=True, timeout=60)
    if done.returncode != 0 or not done.stdout:
        raise DataError(f"espeak-ng failed on {' '.join(command[1:])!r} (exit {done.returncode}): "
                        f"{done.stderr.decode(errors='replace').strip() or 'no output'}; expected a WAV on stdout")
    data, rate = sf.read(io.BytesIO(done.stdout), dtype="float32")
    clip = prepare_clip(data, rate, sample_rate, length)
    if clip is None:
        raise DataError(f"espeak-ng produced silence for {' '.join(command[1:])!r}; expected speech")
    return clip
