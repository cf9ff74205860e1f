"""Readers for image data on disk: folders of PNG/JPEG files, MNIST-format IDX files and .npz archives.

Each reader returns an `ImageDataset` in [-1, 1] at the native size (a folder of mixed sizes is
resized while reading, since its images cannot be stacked otherwise). Errors name the file and say
what was expected.
"""

from __future__ import annotations

import gzip
import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genlab.data.images import DataError, ImageDataset, resize_square, to_float_images

log = logging.getLogger("genlab.data")

PATH_KINDS = ("a folder of PNG/JPEG images (one sub-folder per class for labels), an MNIST IDX folder "
              "(train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz]) or IDX images file, "
              "or a .npz file with an `images` array")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IDX_PARTS = ("train", "t10k")  # MNIST's split prefixes; t10k is appended after train

# IDX type byte -> numpy dtype; IDX stores multi-byte values big-endian.
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_path(path: Path, image_size: int = 0) -> ImageDataset:
    """Read whatever `path` is: an image folder, an IDX folder or file, or a .npz file."""
    if path.is_dir():
        if _find_idx(path, "train-images-idx3-ubyte"):
            return read_idx_folder(path)
        return read_folder(path, image_size)
    if path.suffix.lower() == ".npz":
        return read_npz(path)
    if "idx" in path.name:
        return read_idx_images(path)
    raise DataError(f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; expected {PATH_KINDS}")


# ---------------------------------------------------------------------------------------------
# Folders of PNG/JPEG images

def read_folder(folder: Path, image_size: int = 0) -> ImageDataset:
    """Read PNG/JPEG files under `folder` recursively; top-level sub-folder names become classes.

    Unreadable files are dropped with a warning. Grey images give 1 channel; if any image is colour,
    all are converted to RGB. Mixed sizes need `image_size` > 0 (pad to square, then resize).
    """
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    if not files:
        raise DataError(f"{folder}: no PNG or JPEG images found (searched sub-folders too); expected {PATH_KINDS}")
    classes = sorted({f.relative_to(folder).parts[0] for f in files if f.parent != folder})
    loose = [f for f in files if f.parent == folder]
    if classes and loose:
        raise DataError(f"{folder}: has class sub-folders ({', '.join(classes[:5])}) and also images at the top "
                        f"level (e.g. {loose[0].name}); move every image into a class sub-folder, or keep a flat "
                        "folder for unlabeled data")

    arrays, kept, dropped = [], [], []
    for f in files:
        try:
            arrays.append(_read_image(f))
            kept.append(f)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            dropped.append((f, e))
    if dropped:
        first, err = dropped[0]
        log.warning("dropped %d unreadable files in %s (first: %s: %s)", len(dropped), folder, first, err)
    if not arrays:
        raise DataError(f"{folder}: none of the {len(files)} image files could be read "
                        f"(first: {dropped[0][0]}: {dropped[0][1]})")

    channels = 3 if any(a.shape[2] == 3 for a in arrays) else 1
    arrays = [np.repeat(a, 3, axis=2) if a.shape[2] != channels else a for a in arrays]
    images = _stack(arrays, kept, image_size, folder)
    labels = None
    if classes:
        index = {name: i for i, name in enumerate(classes)}
        labels = torch.tensor([index[f.relative_to(folder).parts[0]] for f in kept], dtype=torch.int64)
    return ImageDataset(images, labels, classes, str(folder), str(folder.resolve()))


def _read_image(path: Path) -> np.ndarray:
    """One image file -> (H, W, 1) or (H, W, 3) uint8."""
    with Image.open(path) as im:
        im.load()  # decode now, so a truncated file fails here rather than later
        if im.mode.startswith("I"):  # 16/32-bit grey (16-bit PNGs): scale 0..65535 down to 0..255
            arr = (np.asarray(im, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
        elif im.mode in ("1", "L", "LA", "F"):
            arr = np.asarray(im.convert("L"))
        else:
            arr = np.asarray(im.convert("RGB"))
    return arr[:, :, None] if arr.ndim == 2 else arr


def _stack(arrays: list[np.ndarray], files: list[Path], image_size: int, folder: Path) -> torch.Tensor:
    """(H, W, C) uint8 arrays -> (N, C, H, W) in [-1, 1]; mixed sizes are resized group by group."""
    sizes = [a.shape[:2] for a in arrays]
    if len(set(sizes)) == 1:
        return to_float_images(np.stack(arrays).transpose(0, 3, 1, 2), str(folder))
    if not image_size:
        (h0, w0), odd = sizes[0], next(i for i, s in enumerate(sizes) if s != sizes[0])
        (h, w) = sizes[odd]
        raise DataError(f"{files[odd]}: image is {w}x{h} but {files[0].name} is {w0}x{h0}; all images in {folder} "
                        "must share one size, or pass --image-size N (data.image_size=N) to pad and resize them")
    out = torch.empty(len(arrays), arrays[0].shape[2], image_size, image_size)
    for size in set(sizes):
        idx = [i for i, s in enumerate(sizes) if s == size]
        group = np.stack([arrays[i] for i in idx]).transpose(0, 3, 1, 2)
        out[idx] = resize_square(to_float_images(group, str(folder)), image_size)
    return out


# ---------------------------------------------------------------------------------------------
# MNIST-format IDX files (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS")

def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (raw or gzipped) into an array, checking the magic number and the length."""
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (magic bytes {data[:4].hex(' ') or 'missing'}); expected "
                        "00 00 <type> <ndim>, e.g. 00 00 08 03 for MNIST images")
    ndim, dtype = data[3], IDX_DTYPES[data[2]]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    need, have = int(np.prod(dims)) * dtype.itemsize, len(data) - header
    if have != need:
        what = "truncated" if have < need else "too long"
        raise DataError(f"{path}: {what} IDX file: dims {dims} need {need} bytes of data, found {have}")
    return np.frombuffer(data, dtype, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":  # gzip magic; files are recognised by content, not by name
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e}); delete it and download it again") from e


def read_idx_images(images_path: Path, require_labels: bool = False) -> ImageDataset:
    """An IDX images file (N, H, W), with labels from the file beside it named by MNIST's convention.

    `train-images-idx3-ubyte[.gz]` pairs with `train-labels-idx1-ubyte[.gz]`. Without a labels file the
    data is unlabeled, unless `require_labels`.
    """
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: IDX array has shape {images.shape}; expected images (N, H, W)")
    stem = images_path.name.removesuffix(".gz").replace("images", "labels").replace("idx3", "idx1")
    labels_path = _find_idx(images_path.parent, stem)
    labels = None
    if labels_path is None:
        if require_labels:
            raise DataError(f"{images_path.parent}: has {images_path.name} but no labels file; expected {stem}[.gz]")
        log.info("no labels file %s[.gz] beside %s; loading it unlabeled", stem, images_path)
    else:
        raw = read_idx(labels_path)
        if raw.ndim != 1 or len(raw) != len(images):
            raise DataError(f"{labels_path}: labels have shape {raw.shape} but {images_path.name} holds "
                            f"{len(images)} images; expected shape ({len(images)},), one label per image")
        labels = torch.from_numpy(raw.astype(np.int64))
    tensor = to_float_images(images[:, None], str(images_path))
    classes = [str(i) for i in range(int(labels.max()) + 1)] if labels is not None and len(labels) else []
    return ImageDataset(tensor, labels, classes, str(images_path), str(images_path.resolve()))


def read_idx_folder(folder: Path) -> ImageDataset:
    """A folder of MNIST-format files: train-* and, when present, t10k-* appended after it."""
    parts = [read_idx_images(p, require_labels=True)
             for p in (_find_idx(folder, f"{part}-images-idx3-ubyte") for part in IDX_PARTS) if p is not None]
    shapes = {tuple(p.images.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise DataError(f"{folder}: train and t10k images differ in shape {sorted(shapes)}; expected one shape")
    labels = torch.cat([p.labels for p in parts])
    classes = [str(i) for i in range(int(labels.max()) + 1)]
    return ImageDataset(torch.cat([p.images for p in parts]), labels, classes, str(folder), str(folder.resolve()))


def _find_idx(folder: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz` in `folder`, preferring the raw file (no decompression)."""
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


# ---------------------------------------------------------------------------------------------
# .npz archives

def read_npz(path: Path) -> ImageDataset:
    """A .npz with `images` (N,H,W), (N,H,W,C) or (N,C,H,W) [C = 1 or 3] and optional `labels`, `classes`.

    Pickled object arrays are refused: loading them could run code.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read as .npz ({e}); expected a numpy .npz archive "
                        "without object (pickled) arrays") from e
    if "images" not in arrays:
        raise DataError(f"{path}: no `images` array (found: {', '.join(arrays) or 'none'}); expected `images` "
                        "of shape (N, H, W), (N, H, W, C) or (N, C, H, W)")
    images = _to_nchw(arrays["images"], path)
    where = f"{path} `images`"
    labels, classes = None, []
    if "labels" in arrays:
        raw = arrays["labels"]
        if raw.ndim != 1 or len(raw) != len(images) or raw.dtype.kind not in "iu":
            raise DataError(f"{path}: `labels` has shape {raw.shape} and dtype {raw.dtype}; expected integers "
                            f"of shape ({len(images)},), one per image")
        if len(raw) and raw.min() < 0:
            raise DataError(f"{path}: `labels` contains {raw.min()}; expected class ids >= 0")
        labels = torch.from_numpy(raw.astype(np.int64))
        classes = ([str(c) for c in arrays["classes"].tolist()] if "classes" in arrays
                   else [str(i) for i in range(int(raw.max()) + 1 if len(raw) else 0)])
        if len(raw) and raw.max() >= len(classes):
            raise DataError(f"{path}: `labels` goes up to {raw.max()} but `classes` names only {len(classes)}; "
                            "expected a class name for every label id")
    return ImageDataset(to_float_images(images, where), labels, classes, str(path), str(path.resolve()))


def _to_nchw(images: np.ndarray, path: Path) -> np.ndarray:
    """Bring `images` to (N, C, H, W). A 4-D array whose last axis is 1 or 3 is read as (N, H, W, C)."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    elif not (images.ndim == 4 and images.shape[1] in (1, 3)):
        raise DataError(f"{path}: `images` has shape {images.shape}; expected (N, H, W), (N, H, W, C) or "
                        "(N, C, H, W) with C = 1 or 3")
    if len(images) == 0:
        raise DataError(f"{path}: `images` has shape {images.shape}; expected at least one image")
    return images
