"""Video output: clips in [-1, 1] as animated GIF (Pillow), MP4 (H.264 through PyAV), a filmstrip PNG and .npz.

A file of several clips shows them side by side: each frame of the GIF/MP4 is the grid of every clip's frame at
that time (genlab.imageio.grid_image, upscaled so 32x32 clips are visible). The filmstrip puts one clip per row
and its frames left to right: the motion readable on paper. The provenance dict (genlab.provenance) goes into the
file itself (the GIF comment extension; the MP4 `comment` tag) and into a JSON sidecar `<file>.json`. Files are
written atomically (genlab.runs.atomic_write).
"""

from __future__ import annotations

import io
import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genlab.errors import UsageError
from genlab.imageio import grid_image, save_png, write_npz
from genlab.provenance import as_text, parse_comment, write_sidecar
from genlab.runs import atomic_write

VIDEO_OUTPUTS = (".gif", ".mp4", ".npz")


def _check(clips: torch.Tensor) -> torch.Tensor:
    clips = clips.detach().cpu().float() if isinstance(clips, torch.Tensor) else torch.as_tensor(clips).float()
    if clips.ndim != 5 or clips.shape[2] not in (1, 3) or clips.shape[1] < 1:
        raise UsageError(f"clips have shape {tuple(clips.shape)}; expected (N, F, C, H, W) in [-1, 1], C = 1 or 3")
    return clips


def grid_frames(clips: torch.Tensor, nrow: int | None = None, upscale: int | None = None) -> list[np.ndarray]:
    """(N, F, C, H, W) clips in [-1, 1] -> F uint8 (H', W', C) frames, each the grid of the N clips at that time."""
    clips = _check(clips)
    return [grid_image(clips[:, f], nrow, upscale) for f in range(clips.shape[1])]


def filmstrip(clips: torch.Tensor, upscale: int = 2, max_frames: int = 16) -> np.ndarray:
    """One clip per row, frames left to right (at most `max_frames`, evenly spaced), as one uint8 image."""
    clips = _check(clips)
    f = clips.shape[1]
    keep = torch.linspace(0, f - 1, min(f, max_frames)).round().long()
    return grid_image(clips[:, keep].reshape(-1, *clips.shape[2:]), nrow=len(keep), upscale=upscale)


def _meta_json(metadata: dict | None) -> str:
    return json.dumps(as_text(metadata), sort_keys=True)


def gif_bytes(frames: list[np.ndarray], fps: float, metadata: dict | None = None) -> bytes:
    """uint8 (H, W, C) frames as a looping animated GIF at `fps`, the metadata's JSON as its comment."""
    mode = "L" if frames[0].shape[2] == 1 else "RGB"
    images = [Image.fromarray(f[:, :, 0] if mode == "L" else f, mode) for f in frames]
    if mode == "RGB":   # one shared palette, so colours do not flicker from frame to frame
        palette = images[len(images) // 2].quantize(colors=255, method=Image.Quantize.MEDIANCUT)
        images = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, round(1000 / fps)), comment=_meta_json(metadata).encode(), disposal=1,
                   optimize=False)
    return buf.getvalue()


def mp4_bytes(frames: list[np.ndarray], fps: float, metadata: dict | None = None) -> bytes:
    """uint8 (H, W, C) frames as an H.264 MP4 (yuv420p, plays in browsers) with the metadata in its comment."""
    try:
        import av
    except ImportError as e:
        raise UsageError("writing MP4 needs PyAV (pip install av); write a .gif instead") from e
    h, w = frames[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2   # yuv420p needs even sides
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        container.metadata["comment"] = _meta_json(metadata)
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for f in frames:
            rgb = np.repeat(f, 3, axis=2) if f.shape[2] == 1 else f
            rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def video_bytes(clips: torch.Tensor, fmt: str, fps: float, metadata: dict | None = None,
                nrow: int | None = None) -> bytes:
    """`clips` side by side as one "gif" or "mp4" file's bytes."""
    frames = grid_frames(clips, nrow)
    if fmt == "gif":
        return gif_bytes(frames, fps, metadata)
    if fmt == "mp4":
        return mp4_bytes(frames, fps, metadata)
    raise UsageError(f"video format {fmt!r}; expected gif or mp4")


def save_video(path: str | os.PathLike, clips: torch.Tensor, fps: float, metadata: dict | None = None, *,
               labels: torch.Tensor | None = None, classes: list[str] | None = None,
               nrow: int | None = None) -> Path:
    """Write clips as .gif/.mp4 (side by side) or .npz (uint8 `clips` (N, F, C, H, W), `labels`, `classes`, `fps`,
    `metadata`; reads back with `--data x.npz`), plus the JSON sidecar `<path>.json`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".gif", ".mp4"):
        atomic_write(path, video_bytes(clips, suffix[1:], fps, metadata, nrow))
    elif suffix == ".npz":
        uint8 = ((_check(clips).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        write_npz(path, {"clips": uint8, "fps": np.asarray(float(fps))}, labels, classes, metadata)
    else:
        raise UsageError(f"--out {path}: expected a video file ending in {', '.join(VIDEO_OUTPUTS)}")
    write_sidecar(path, metadata)
    return path


def save_filmstrip(path: str | os.PathLike, clips: torch.Tensor, metadata: dict | None = None) -> Path:
    return save_png(filmstrip(clips), path, as_text(metadata))


def read_video_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata a genlab GIF or MP4 carries in its comment ({} when it has none)."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        with Image.open(path, formats=["GIF"]) as im:
            comment = im.info.get("comment", b"")
        comment = comment.decode() if isinstance(comment, bytes) else comment
    else:
        import av

        with av.open(str(path)) as container:
            comment = container.metadata.get("comment", "")
    return parse_comment(comment, path)

