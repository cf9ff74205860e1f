"""Image output: [-1, 1] tensors to uint8, sample grids, PNGs with text metadata, and .npz archives.

Every file is written atomically (temp file in the same folder, fsync, rename), so a killed process
never leaves half a PNG behind.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from genlab.errors import UsageError
from genlab.provenance import as_text
from genlab.runs import atomic_write

GRID_MIN_WIDTH = 256  # save_grid upscales small images until the grid is about this wide
PAD_VALUE = 128       # mid grey between grid cells: visible on black and on white backgrounds


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) values in [-1, 1] -> (N, H, W, C) uint8 0..255 (out-of-range values are clipped)."""
    x = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    if x.ndim != 4:
        raise UsageError(f"images have shape {x.shape}; expected (N, C, H, W) in [-1, 1]")
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def make_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images into one (H, W, C) uint8 array, `nrow` images per row (default: about square).

    `images` is (N, C, H, W) in [-1, 1], or an (N, H, W, C) uint8 array as `to_uint8` returns.
    """
    tiles = images if isinstance(images, np.ndarray) and images.dtype == np.uint8 else to_uint8(images)
    n, h, w, c = tiles.shape
    ncol = nrow or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), PAD_VALUE, np.uint8)
    for i in range(n):
        top, left = pad + (i // ncol) * (h + pad), pad + (i % ncol) * (w + pad)
        grid[top:top + h, left:left + w] = tiles[i]
    return grid


def png_bytes(array: np.ndarray, metadata: dict[str, str] | None = None) -> bytes:
    """An (H, W), (H, W, 1) or (H, W, 3) uint8 array as PNG bytes, with `metadata` as text chunks."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise UsageError(f"array has shape {array.shape} and dtype {array.dtype}; expected uint8 (H, W), "
                         "(H, W, 1) or (H, W, 3)")
    info = PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(str(key), str(value))
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(array: np.ndarray, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write an (H, W), (H, W, 1) or (H, W, 3) uint8 array as a PNG, with `metadata` as text chunks."""
    return atomic_write(path, png_bytes(array, metadata))


def grid_image(images: torch.Tensor | np.ndarray, nrow: int | None = None, upscale: int | None = None) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] tiled into one uint8 array, `nrow` per row (default: about square).

    `upscale` repeats each pixel that many times (nearest neighbour); by default small images such as
    8x8 digits are upscaled until the grid is about GRID_MIN_WIDTH pixels wide.
    """
    tiles = to_uint8(images)
    ncol = nrow or math.ceil(math.sqrt(len(tiles)))
    factor = upscale or max(1, math.ceil(GRID_MIN_WIDTH / (min(ncol, len(tiles)) * tiles.shape[2])))
    if factor > 1:  # upscale the tiles, not the grid, so the padding stays thin
        tiles = tiles.repeat(factor, axis=1).repeat(factor, axis=2)
    return make_grid(tiles, ncol)


def save_grid(images: torch.Tensor | np.ndarray, path: str | os.PathLike, nrow: int | None = None,
              metadata: dict[str, str] | None = None, upscale: int | None = None) -> Path:
    """Save (N, C, H, W) images in [-1, 1] as a PNG grid (see `grid_image`)."""
    return save_png(grid_image(images, nrow, upscale), path, metadata)


def save_npz(path: str | os.PathLike, images: torch.Tensor | np.ndarray, labels: torch.Tensor | None = None,
             classes: list[str] | None = None, *, metadata: dict[str, str] | None = None) -> Path:
    """Save (N, C, H, W) images in [-1, 1] as uint8 (N, H, W, C) `images`, plus `labels` and `classes`.

    `metadata` (the PNG text chunks, genlab.provenance) is stored as `metadata`: a 0-d string array
    holding the dict as JSON, read back with `json.loads(str(np.load(path)["metadata"]))`.
    The result loads back with `load_images(DataConfig(name=path))`.
    """
    return write_npz(path, {"images": to_uint8(images)}, labels, classes, metadata)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], labels=None, classes: list[str] | None = None,
              metadata: dict | None = None) -> Path:
    """A compressed .npz of `arrays` plus `labels` (int64), `classes` (strings) and `metadata` (a 0-d string array
    holding the dict as JSON), each when given; written atomically."""
    arrays = dict(arrays)
    if metadata:
        arrays["metadata"] = np.asarray(json.dumps(as_text(metadata), sort_keys=True))
    if labels is not None:
        arrays["labels"] = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, np.int64)
    if classes:
        arrays["classes"] = np.asarray(classes, dtype=str)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write(path, buf.getvalue())
