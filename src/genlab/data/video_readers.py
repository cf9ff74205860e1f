"""Readers for video on disk: folders of GIF / MP4 / WebM files and .npy/.npz arrays of clips.

Every reader returns a `VideoDataset` of clips `data.frames + data.crop_frames` frames long at `data.fps`:

- frame rate: each file's frames are resampled to data.fps by time (the frame on screen at t = k / fps is kept,
  so a 25 fps file read at 8 fps keeps about every third frame and a 4 fps GIF repeats each frame twice);
- length: a file is cut into consecutive clips of that many frames (the remainder is left out); a file shorter
  than one clip is dropped, counted, with a warning;
- size: frames are padded to square and resized to data.image_size; with image_size=0 every file must share one
  size (a mixed folder is an error that says to pass --image-size);
- colour: clips are grey (1 channel) when every frame of every file is grey, RGB otherwise.

Refused with a clear error, before anything large is decoded: a file longer than data.max_seconds (its header's
duration), a single-frame file (a still image), data past data.memory_budget_gb. A corrupt file is dropped with
a warning, and a folder where nothing can be read is an error. GIFs are read by Pillow; MP4/WebM/MKV/MOV/AVI by
PyAV (FFmpeg in its wheel). Arrays carry no frame rate, except genlab's own .npz (its `fps`, resampled from);
other arrays' frames are taken to be at data.fps already. Each clip remembers the file (or array row) it was cut
from (`VideoDataset.groups`), so that the split keeps a file's clips on one side.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence

from genlab.data.folders import files_under, folder_classes, folder_labels
from genlab.data.images import check_memory, resize_square, to_float_images
from genlab.data.readers import UNREADABLE, npz_arrays, npz_headers, check_labels
from genlab.data.videos import PATH_KINDS, VIDEO_SUFFIXES, VideoDataset, to_uint8
from genlab.errors import DataError

log = logging.getLogger("genlab.data")

GIF_DEFAULT_MS = 100   # a GIF frame without a duration, or of 10 ms or less, is shown for 0.1 s (what browsers do)
RATE_TOLERANCE = 0.05  # source frame rates within 5% of data.fps are taken as equal


def read_video_folder(folder: Path, cfg) -> VideoDataset:
    """Video files under `folder` (recursively); top-level sub-folder names become classes."""
    files = files_under(folder, VIDEO_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no video files ({', '.join(VIDEO_SUFFIXES)}) found (searched sub-folders "
                        f"too); expected {PATH_KINDS}")
    classes = folder_classes(folder, files, "videos", "unlabelled clips")
    length = cfg.frames + cfg.crop_frames
    clips, owners, broken, short, used = [], [], [], [], 0
    for f in files:
        try:
            frames = read_video_file(f, cfg.fps, cfg.max_seconds, cfg.memory_budget_gb)
        except DataError:
            raise
        except UNREADABLE as e:
            broken.append((f, e))
            continue
        if len(frames) < length:
            short.append((f, len(frames)))
            continue
        used += frames[0].nbytes * length * (len(frames) // length)
        check_memory(2 * used, cfg.memory_budget_gb, str(f), f"the clips decoded so far ({len(clips)} files)")
        clips.append(np.stack(frames[:len(frames) // length * length]).reshape(-1, length, *frames[0].shape))
        owners.append(f)
    _report(folder, files, broken, short, length, cfg.fps)
    _check_sizes(clips, owners, cfg.image_size, folder)
    grey = all(_is_grey(c) for c in clips)
    parts = [torch.from_numpy(c[..., :1] if grey else c).permute(0, 1, 4, 2, 3) for c in clips]   # (n, F, C, H, W)
    if len({p.shape[-2:] for p in parts}) > 1:   # (with image_size) each file's clips first: they cannot be stacked
        parts = [_resize(p, cfg.image_size, cfg.memory_budget_gb, str(f)) for p, f in zip(parts, owners)]
    stacked = _resize(torch.cat(parts).contiguous(), cfg.image_size, cfg.memory_budget_gb, str(folder))
    groups = torch.arange(len(clips)).repeat_interleave(torch.tensor([len(c) for c in clips]))   # clip -> file
    labels = None
    if classes:
        labels = torch.tensor(folder_labels(folder, owners, classes))[groups]
    return VideoDataset(stacked, labels, classes if labels is not None else [], cfg.fps, str(folder),
                        str(folder.resolve()), dropped=len(broken) + len(short), groups=groups)


def _report(folder: Path, files: list, broken: list, short: list, length: int, fps: float) -> None:
    if broken:
        log.warning("dropped %d unreadable video files in %s (first: %s: %s)", len(broken), folder, *broken[0])
    if short:
        log.warning("dropped %d video files in %s shorter than one clip of %d frames at %g fps (first: %s, %d "
                    "frames)", len(short), folder, length, fps, *short[0])
    if len(broken) + len(short) == len(files):
        why = (f"first: {broken[0][0]}: {broken[0][1]}" if broken else
               f"each is shorter than {length} frames at {fps:g} fps, e.g. {short[0][0]} has {short[0][1]}")
        raise DataError(f"{folder}: none of the {len(files)} video files gave a clip ({why}); expected readable "
                        "videos of at least data.frames + data.crop_frames frames at data.fps (lower data.frames, "
                        "or raise data.fps)")


def read_video_file(path: Path, fps: float, max_seconds: float, budget_gb: float) -> list[np.ndarray]:
    """One file's frames resampled to `fps`: a list of (H, W, 3) uint8 arrays."""
    if path.suffix.lower() == ".gif":
        times, frames = _read_gif(path, max_seconds, budget_gb)
    else:
        times, frames = _read_av(path, max_seconds, budget_gb)
    if len(frames) < 2:
        raise DataError(f"{path}: holds a single frame (a still image); expected a video of at least 2 frames "
                        "(remove it, or read stills as an image dataset)")
    return resample(times, frames, fps)


def resample(times: list[float], frames: list[np.ndarray], fps: float) -> list[np.ndarray]:
    """Frames shown from `times` (seconds, ascending; the last is the end of the last frame) resampled to `fps`:
    output frame k is the one on screen at k / fps. A source within RATE_TOLERANCE of `fps` keeps its frames one
    to one: GIF stores durations in 1/100 s, so a clip written at 8 fps comes back at 8.33 fps."""
    start, end = times[0], times[-1]
    if abs(len(frames) / max(end - start, 1e-9) - fps) <= RATE_TOLERANCE * fps:
        return list(frames)
    count = max(1, round((end - start) * fps))
    at = start + np.arange(count) / fps + 1e-6   # a frame that starts at k / fps up to rounding is on screen then
    index = np.clip(np.searchsorted(np.asarray(times[:-1]), at, side="right") - 1, 0, len(frames) - 1)
    return [frames[i] for i in index]


def _too_long(path: Path, seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise DataError(f"{path}: is {seconds:.0f} s long, more than data.max_seconds={max_seconds:g}; expected "
                        "short clips: cut the file first, or raise data.max_seconds")


def _read_gif(path: Path, max_seconds: float, budget_gb: float) -> tuple[list[float], list[np.ndarray]]:
    with Image.open(path, formats=["GIF"]) as im:
        n = getattr(im, "n_frames", 1)
        check_memory(n * im.width * im.height * 3, budget_gb, str(path), f"{n} frames of {im.width}x{im.height}")
        times, frames, ms = [], [], 0   # whole milliseconds: a sum of floats drifts off the frame grid
        for frame in ImageSequence.Iterator(im):
            delay = int(frame.info.get("duration") or 0)
            times.append(ms / 1000)
            frames.append(np.asarray(frame.convert("RGB")))
            ms += delay if delay > 10 else GIF_DEFAULT_MS
            _too_long(path, ms / 1000, max_seconds)
    return times + [ms / 1000], frames


def _read_av(path: Path, max_seconds: float, budget_gb: float) -> tuple[list[float], list[np.ndarray]]:
    try:
        import av
    except ImportError as e:
        raise DataError(f"{path}: reading {path.suffix} video needs PyAV (pip install av); GIF files read "
                        "without it") from e
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise OSError(f"not a video FFmpeg can read ({e})") from e
    with container:
        if not container.streams.video:
            raise OSError("holds no video stream")
        stream = container.streams.video[0]
        seconds = container.duration / 1e6 if container.duration else 0.0
        _too_long(path, seconds, max_seconds)
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        frame_bytes = 3 * (stream.width or 0) * (stream.height or 0)
        count = stream.frames or round(seconds * rate)
        check_memory(count * frame_bytes, budget_gb, str(path), f"decoding {count} frames of {stream.width}x"
                     f"{stream.height} (frames are decoded at the file's own rate; cut or scale the file down)")
        times, frames = [], []
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else len(frames) / rate
                _too_long(path, t - (times[0] if times else t), max_seconds)   # headers can lie; timestamps not
                array = frame.to_ndarray(format="rgb24")
                if frames and array.shape != frames[0].shape:
                    raise OSError(f"changes frame size from {frames[0].shape[1]}x{frames[0].shape[0]} to "
                                  f"{array.shape[1]}x{array.shape[0]} at frame {len(frames)}")
                check_memory((len(frames) + 1) * array.nbytes, budget_gb, str(path), f"decoding {len(frames) + 1} "
                             f"frames of {array.shape[1]}x{array.shape[0]}")
                times.append(t)
                frames.append(array)
        except av.error.FFmpegError as e:
            if not frames:
                raise OSError(f"corrupt video data ({e})") from e
            log.warning("%s: stopped at a corrupt frame after %d frames (%s)", path, len(frames), e)
    if not frames:
        raise OSError("no frames could be decoded")
    order = np.argsort(times, kind="stable")   # decoders return frames in presentation order; make sure
    times, frames = [times[i] for i in order], [frames[i] for i in order]
    return times + [times[-1] + 1 / rate], frames


def _check_sizes(clips: list[np.ndarray], owners: list[Path], image_size: int, folder: Path) -> None:
    """Files of different frame sizes need data.image_size to be resized to."""
    sizes = [c.shape[2:4] for c in clips]
    if len(set(sizes)) == 1 or image_size:
        return
    (h0, w0), odd = sizes[0], next(i for i, s in enumerate(sizes) if s != sizes[0])
    h, w = sizes[odd]
    raise DataError(f"{owners[odd]}: frames are {w}x{h} but {owners[0].name}'s are {w0}x{h0}; all videos in {folder} "
                    "must share one size, or pass --image-size N (data.image_size=N) to pad and resize them")


def _resize(clips: torch.Tensor, size: int, budget_gb: float, where: str) -> torch.Tensor:
    """(N, F, C, H, W) uint8 -> square frames of `size` (unchanged when size is 0 or already right)."""
    n, f, c, h, w = clips.shape
    if h != w and not size:
        size = max(h, w)   # frames must be square: pad, keeping the size
    if not size or (h == w == size):
        return clips
    check_memory(4 * n * f * c * (max(h, w) ** 2 + size * size), budget_gb, where,
                 f"resizing {n} clips to data.image_size={size}")
    out = torch.empty(n, f, c, size, size, dtype=torch.uint8)
    for i in range(0, n, 64):
        part = to_float_images(clips[i:i + 64].reshape(-1, c, h, w).numpy(), where)
        out[i:i + 64] = to_uint8(resize_square(part, size)).reshape(-1, f, c, size, size)
    return out


def _is_grey(clips: np.ndarray) -> bool:
    return bool((clips[..., 0] == clips[..., 1]).all() and (clips[..., 1] == clips[..., 2]).all())


# ---------------------------------------------------------------------------------------------
# Arrays

def read_video_array(path: Path, cfg) -> VideoDataset:
    """A .npy of clips, or a .npz with `clips` (or `videos`) and optional `labels`, `classes` and `fps` (then the
    clips are resampled from it to data.fps; without it they are taken to be at data.fps).

    Clips are (N, T, C, H, W) or (N, T, H, W, C) with C = 1 or 3, or grey (N, T, H, W); uint8 0..255 or float in
    [0, 1] or [-1, 1]. Sizes are checked from the headers before anything is read; pickles are refused."""
    labels, classes = None, []
    if path.suffix.lower() == ".npy":
        try:
            with open(path, "rb") as fh:   # the header first: its shape is checked before anything is read
                version = np.lib.format.read_magic(fh)
                shape, _, dtype = (np.lib.format.read_array_header_2_0 if version == (2, 0)
                                   else np.lib.format.read_array_header_1_0)(fh)
            _check_array_memory(shape, dtype, cfg, path)
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read as .npy ({e}); expected a numpy array file without pickles") from e
        arrays = {"clips": np.asarray(raw)}
    else:
        headers = npz_headers(path)
        key = next((k for k in ("clips", "videos") if k in headers), None)
        if key is None:
            raise DataError(f"{path}: no `clips` (or `videos`) array (found: {', '.join(headers) or 'none'}); "
                            "expected `clips` shaped (N, T, C, H, W), (N, T, H, W, C) or (N, T, H, W)")
        _check_array_memory(*headers[key], cfg, path)
        arrays = npz_arrays(path, headers)
        arrays["clips"] = arrays.pop(key)
    clips = _to_ntchw(arrays["clips"], path)
    if "fps" in arrays:   # genlab's own .npz records its frame rate: resample to data.fps
        source = float(arrays["fps"])
        if not source > 0:
            raise DataError(f"{path}: `fps` is {source}; expected a positive frame rate")
        t = clips.shape[1]
        keep = resample(list(np.arange(t + 1) / source), list(range(t)), cfg.fps)
        clips = clips[:, keep]
    if "labels" in arrays:
        labels = check_labels(arrays["labels"], f"{path} `labels`", len(clips))
        names = arrays.get("classes")
        classes = ([str(c) for c in names.tolist()] if names is not None and names.ndim == 1
                   else [str(i) for i in range(int(labels.max()) + 1)])
        if labels.max() >= len(classes):
            raise DataError(f"{path}: `labels` goes up to {labels.max()} but `classes` names only {len(classes)}; "
                            "expected a class name for every label id")
    length = cfg.frames + cfg.crop_frames
    n, t = clips.shape[:2]
    if t < length:
        raise DataError(f"{path}: clips are {t} frames long; expected at least data.frames + data.crop_frames = "
                        f"{length} (lower data.frames)")
    per = t // length   # each clip is cut into `per` consecutive clips of `length` frames
    clips = clips[:, :per * length].reshape(n * per, length, *clips.shape[2:])
    if labels is not None:
        labels = labels.repeat_interleave(per)
    groups = torch.arange(n).repeat_interleave(per)
    uint8 = to_uint8(to_float_images(clips.reshape(-1, *clips.shape[2:]), f"{path} `clips`")).reshape(clips.shape)
    uint8 = _resize(uint8, cfg.image_size, cfg.memory_budget_gb, str(path))
    return VideoDataset(uint8, labels, classes, cfg.fps, str(path), str(path.resolve()), groups=groups)


def _check_array_memory(shape: tuple, dtype: np.dtype, cfg, path: Path) -> None:
    check_memory(math.prod(shape) * (dtype.itemsize + 1 + 4), cfg.memory_budget_gb, str(path),
                 f"clips of shape {tuple(shape)} ({dtype})")


def _to_ntchw(clips: np.ndarray, path: Path) -> np.ndarray:
    """Bring clips to (N, T, C, H, W): a 5-D array with 1 or 3 on axis 2 is already so, else on the last axis."""
    if clips.ndim == 4:
        clips = clips[:, :, None]
    elif clips.ndim == 5 and clips.shape[2] not in (1, 3) and clips.shape[-1] in (1, 3):
        clips = clips.transpose(0, 1, 4, 2, 3)
    elif not (clips.ndim == 5 and clips.shape[2] in (1, 3)):
        raise DataError(f"{path}: clips have shape {clips.shape}; expected (N, T, C, H, W), (N, T, H, W, C) with "
                        "C = 1 or 3, or grey (N, T, H, W)")
    if clips.size == 0:
        raise DataError(f"{path}: clips have shape {clips.shape}; expected at least one clip")
    return np.ascontiguousarray(clips)
