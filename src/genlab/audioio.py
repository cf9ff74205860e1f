"""Audio output: waveforms in [-1, 1] as 16-bit PCM WAV files with provenance.

The provenance dict (genlab.provenance) goes into the file itself (the RIFF INFO chunk that soundfile writes:
its JSON in `comment`, "genlab <version>" in `software`, the dict's human-readable "Comment" as `title`) and
into a JSON sidecar `<file>.json`, which holds it whatever the player or editor keeps. Files are written
atomically (genlab.runs.atomic_write), so a killed process never leaves half a WAV behind.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from genlab.errors import UsageError
from genlab.provenance import as_text, parse_comment, write_sidecar
from genlab.runs import atomic_write
from genlab.version import __version__

PCM_SCALE = 32768        # a sample v in [-1, 1] is stored as round(v * 32768), clipped to int16
COMMENT_LIMIT = 2045     # bytes libsndfile keeps in one INFO string; a longer one is silently left out of the file


def wav_bytes(wave: torch.Tensor | np.ndarray, sample_rate: int, metadata: dict[str, str]) -> bytes:
    """A (T,) or (1, T) waveform in [-1, 1] (values beyond are clipped) as the bytes of a mono 16-bit WAV file
    carrying `metadata`."""
    x = wave.detach().cpu().float().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave, np.float32)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise UsageError(f"waveform has shape {x.shape}; expected (T,) or (1, T) samples in [-1, 1]")
    rate = int(sample_rate)
    if rate != sample_rate or rate < 1:
        raise UsageError(f"sample_rate={sample_rate!r}; expected a positive whole number of Hz")
    comment = json.dumps(as_text(metadata), sort_keys=True)  # ASCII (non-ASCII is escaped): bytes == characters
    if len(comment) > COMMENT_LIMIT:
        raise UsageError(f"the metadata's JSON is {len(comment)} bytes; a WAV file's comment holds at most "
                         f"{COMMENT_LIMIT}; expected shorter metadata (settings)")
    pcm = np.clip(np.round(np.nan_to_num(x) * PCM_SCALE), -PCM_SCALE, PCM_SCALE - 1).astype(np.int16)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, 1, "PCM_16", format="WAV") as f:
        f.title = str(metadata.get("Comment", "genlab audio"))[:COMMENT_LIMIT]
        f.software = f"genlab {__version__}"
        f.comment = comment
        f.write(pcm)
    return buf.getvalue()


def save_wav(path: str | os.PathLike, wave: torch.Tensor | np.ndarray, sample_rate: int,
             metadata: dict[str, str]) -> Path:
    """Write `wave` as a 16-bit WAV (see `wav_bytes`) and `metadata` as the JSON sidecar `<path>.json`."""
    path = Path(path)
    atomic_write(path, wav_bytes(wave, sample_rate, metadata))
    write_sidecar(path, metadata)
    return path


def read_wav_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata a genlab WAV file carries in its comment ({} when it has none)."""
    with sf.SoundFile(path) as f:
        return parse_comment(f.comment, path)
