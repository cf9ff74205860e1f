"""Readers for image data on disk: folders of PNG/JPEG files, MNIST-format IDX files and .npz archives.

Each reader returns an `ImageDataset` in [-1, 1] at the native size (a folder of mixed sizes is
resized while reading, since its images cannot be stacked otherwise). Errors name the file and say
what was expected.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genlab.config import DataConfig
from genlab.data.folders import files_under, folder_classes, folder_labels
from genlab.data.images import ImageDataset, check_memory, resize_square, to_float_images
from genlab.errors import DataError

log = logging.getLogger("genlab.data")

PATH_KINDS = ("a folder of PNG/JPEG images (one sub-folder per class for labels), an MNIST IDX folder "
              "(train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz], or .idx3-ubyte) or IDX images file, "
              "or a .npz file with an `images` array")

BUDGET_GB = DataConfig.memory_budget_gb  # the default of data.memory_budget_gb, for direct calls
MAX_CLASSES = 10_000  # label ids must lie in [0, MAX_CLASSES): a stray id such as 2**62 is an error, not a huge list
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ["PNG", "JPEG"]  # the only Pillow plugins a file may reach, whatever its content (no EPS/Ghostscript)
# What Pillow raises on a damaged file (a broken PNG chunk is a SyntaxError, a short one an EOFError or
# struct.error): each drops the file, counted; MemoryError and DataError are not among them.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)
PIXEL_BYTES = 3 * (1 + 4)        # memory per pixel while reading a folder: RGB uint8 arrays, then float32
IDX_PARTS = ("train", "t10k")  # MNIST's split prefixes; t10k is appended after train

# IDX type byte -> numpy dtype; IDX stores multi-byte values big-endian.
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_path(path: Path, image_size: int = 0, budget_gb: float = BUDGET_GB) -> ImageDataset:
    """Read whatever `path` is: an image folder, an IDX folder or file, or a .npz file.

    Sizes declared in headers are checked against `budget_gb` before anything large is allocated.
    """
    if path.is_dir():
        if _find_idx(path, "train-images-idx3-ubyte"):
            return read_idx_folder(path, budget_gb)
        return read_folder(path, image_size, budget_gb)
    if path.suffix.lower() == ".npz":
        return read_npz(path, budget_gb)
    if "idx" in path.name:
        return read_idx_images(path, budget_gb=budget_gb)
    raise DataError(f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; expected {PATH_KINDS}")


# ---------------------------------------------------------------------------------------------
# Folders of PNG/JPEG images

def read_folder(folder: Path, image_size: int = 0, budget_gb: float = BUDGET_GB) -> ImageDataset:
    """Read PNG/JPEG files under `folder` recursively; top-level sub-folder names become classes.

    Unreadable files, and files whose content is not PNG or JPEG whatever their name, are dropped with
    a warning. Grey images give 1 channel; if any image is colour, all are converted to RGB. Mixed
    sizes need `image_size` > 0 (pad to square, then resize).
    """
    files = image_files(folder)
    if not files:
        raise DataError(f"{folder}: no PNG or JPEG images found (searched sub-folders too); expected {PATH_KINDS}")
    classes = folder_classes(folder, files, "images", "unlabelled images")

    arrays, kept = decode_files(files, folder, budget_gb)
    images = stack(same_channels(arrays), kept, image_size, folder, budget_gb)
    labels = torch.tensor(folder_labels(folder, kept, classes), dtype=torch.int64) if classes else None
    return ImageDataset(images, labels, classes, str(folder), str(folder.resolve()))


def image_files(folder: Path) -> list[Path]:
    """The PNG/JPEG files under `folder`, recursively and sorted, hidden files and folders left out."""
    return files_under(folder, IMAGE_SUFFIXES)


def decode_files(files: list[Path], folder: Path, budget_gb: float) -> tuple[list[np.ndarray], list[Path]]:
    """The images of `files` as (H, W, 1|3) uint8 arrays and the files they came from. Unreadable files, and files
    whose content is not PNG or JPEG whatever their name, are dropped with one counted warning; the memory the
    headers declare is checked against `budget_gb` before each decode."""
    arrays, kept, dropped, pixels = [], [], [], 0
    for f in files:
        try:
            with Image.open(f, formats=IMAGE_FORMATS) as im:
                pixels += im.width * im.height  # from the header: checked before decoding
                check_memory(pixels * PIXEL_BYTES, budget_gb, str(f),
                             f"decoding this {im.width}x{im.height} image after {len(arrays)} others")
                arrays.append(_decode(im))
            kept.append(f)
        except DataError:
            raise
        except UNREADABLE as e:
            dropped.append((f, e))
    if dropped:
        first, err = dropped[0]
        log.warning("dropped %d unreadable files in %s (first: %s: %s)", len(dropped), folder, first, err)
    if not arrays:
        raise DataError(f"{folder}: none of the {len(files)} image files could be read "
                        f"(first: {dropped[0][0]}: {dropped[0][1]})")
    return arrays, kept


def decode_bytes(data: bytes, where: str, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """One PNG or JPEG image from bytes (an upload) as (H, W, 1|3) uint8; anything else, a damaged file or one whose
    header claims more than `max_pixels` is a DataError naming `where`."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
            if im.width * im.height > max_pixels:
                raise DataError(f"{where}: a {im.width}x{im.height} image; expected at most {max_pixels:,} pixels")
            return _decode(im)
    except UNREADABLE as e:
        raise DataError(f"{where}: not a readable PNG or JPEG image ({type(e).__name__}: {e})") from None


def same_channels(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Grey arrays stay grey when all are; if any is colour, all become RGB."""
    channels = 3 if any(a.shape[2] == 3 for a in arrays) else 1
    return [np.repeat(a, 3, axis=2) if a.shape[2] != channels else a for a in arrays]


def _decode(im: Image.Image) -> np.ndarray:
    """An opened image -> (H, W, 1) or (H, W, 3) uint8."""
    im.load()  # decode now, so a truncated file fails here rather than later
    if im.mode.startswith("I"):  # 16/32-bit grey (16-bit PNGs): scale 0..65535 down to 0..255
        arr = (np.asarray(im, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
    elif im.mode in ("1", "L", "LA", "F"):
        arr = np.asarray(im.convert("L"))
    else:
        arr = np.asarray(im.convert("RGB"))
    return arr[:, :, None] if arr.ndim == 2 else arr


def stack(arrays: list[np.ndarray], files: list[Path], image_size: int, folder: Path,
           budget_gb: float) -> torch.Tensor:
    """(H, W, C) uint8 arrays -> (N, C, H, W) in [-1, 1]; mixed sizes are resized group by group."""
    sizes = [a.shape[:2] for a in arrays]
    if len(set(sizes)) == 1:
        return to_float_images(np.stack(arrays).transpose(0, 3, 1, 2), str(folder))
    if not image_size:
        (h0, w0), odd = sizes[0], next(i for i, s in enumerate(sizes) if s != sizes[0])
        (h, w) = sizes[odd]
        raise DataError(f"{files[odd]}: image is {w}x{h} but {files[0].name} is {w0}x{h0}; all images in {folder} "
                        "must share one size, or pass --image-size N (data.image_size=N) to pad and resize them")
    shape = (len(arrays), arrays[0].shape[2], image_size, image_size)
    check_memory(4 * math.prod(shape), budget_gb, str(folder), f"resizing to data.image_size={image_size}")
    out = torch.empty(shape)
    for size in set(sizes):
        idx = [i for i, s in enumerate(sizes) if s == size]
        group = np.stack([arrays[i] for i in idx]).transpose(0, 3, 1, 2)
        out[idx] = resize_square(to_float_images(group, str(folder)), image_size)
    return out


# ---------------------------------------------------------------------------------------------
# MNIST-format IDX files (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS")

def read_idx(path: Path, budget_gb: float = BUDGET_GB) -> np.ndarray:
    """Parse one IDX file (raw or gzipped) into an array.

    The header is checked first: the magic number, dims that match the data length, and the memory
    the dims need against `budget_gb`; a gzipped file is never decompressed past the size it declares.
    """
    stream, gz = _open_idx(path)
    with stream:
        magic = _read(stream, 4, path)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES:
            raise DataError(f"{path}: not an IDX file (magic bytes {magic.hex(' ') or 'missing'}); expected "
                            "00 00 <type> <ndim>, e.g. 00 00 08 03 for MNIST images")
        ndim, dtype = magic[3], IDX_DTYPES[magic[2]]
        header = 4 + 4 * ndim
        raw_dims = _read(stream, 4 * ndim, path)
        if len(raw_dims) < 4 * ndim:
            raise DataError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                            f"file has {4 + len(raw_dims)}")
        dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">u4"))
        count = math.prod(dims)  # Python ints: no overflow, whatever the header claims
        if count == 0:
            raise DataError(f"{path}: empty IDX file: dims {dims} hold no items; expected at least one")
        need = count * dtype.itemsize
        if not gz:
            _check_idx_length(path, dims, need, path.stat().st_size - header)
        check_memory(need + 4 * count, budget_gb, str(path), f"an IDX array of dims {dims}")  # raw + float32
        data = _read(stream, need + 1, path)  # one byte more than declared tells "too long"
    _check_idx_length(path, dims, need, len(data) if len(data) <= need else f"more than {need}")
    return np.frombuffer(data, dtype).reshape(dims)


def _check_idx_length(path: Path, dims: tuple, need: int, have: int | str) -> None:
    if have != need:
        what = "truncated" if isinstance(have, int) and have < need else "too long"
        raise DataError(f"{path}: {what} IDX file: dims {dims} need {need} bytes of data, found {have}")


def _open_idx(path: Path):
    """(stream, gzipped): the file's bytes, decompressed on the fly when gzipped (recognised by content)."""
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        return (gzip.open(path, "rb") if gz else open(path, "rb")), gz
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}; expected a readable IDX file") from e


def _read(stream, n: int, path: Path) -> bytes:
    try:
        return stream.read(n)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated data ({e}); delete it and download it again") from e


def check_labels(raw: np.ndarray, where: str, count: int) -> torch.Tensor:
    """Class ids for `count` items: integers in [0, MAX_CLASSES), one per item -> int64 tensor."""
    if raw.ndim != 1 or len(raw) != count or raw.dtype.kind not in "iu":
        raise DataError(f"{where}: labels have shape {raw.shape} and dtype {raw.dtype}; expected shape "
                        f"({count},) of integer class ids, one label per image")
    lo, hi = int(raw.min()), int(raw.max())
    if lo < 0 or hi >= MAX_CLASSES:
        raise DataError(f"{where}: label ids span [{lo}, {hi}]; expected class ids from 0 to {MAX_CLASSES - 1}")
    return torch.from_numpy(raw.astype(np.int64))


def read_idx_images(images_path: Path, require_labels: bool = False, budget_gb: float = BUDGET_GB) -> ImageDataset:
    """An IDX images file (N, H, W), with labels from the file beside it named by MNIST's convention.

    `train-images-idx3-ubyte[.gz]` pairs with `train-labels-idx1-ubyte[.gz]` (or `.idx1-ubyte`). Without a
    labels file the data is unlabeled, unless `require_labels`.
    """
    images = read_idx(images_path, budget_gb)
    if images.ndim != 3:
        raise DataError(f"{images_path}: IDX array has shape {images.shape}; expected images (N, H, W)")
    stem = images_path.name.removesuffix(".gz").replace("images", "labels").replace("idx3", "idx1")
    labels_path = _find_idx(images_path.parent, stem)
    labels, classes = None, []
    if labels_path is None:
        if require_labels:
            raise DataError(f"{images_path.parent}: has {images_path.name} but no labels file; expected {stem}[.gz]")
        log.info("no labels file %s[.gz] beside %s; loading it unlabeled", stem, images_path)
    else:
        labels = check_labels(read_idx(labels_path, budget_gb), str(labels_path), len(images))
        classes = [str(i) for i in range(int(labels.max()) + 1)]
    tensor = to_float_images(images[:, None], str(images_path))
    return ImageDataset(tensor, labels, classes, str(images_path), str(images_path.resolve()))


def read_idx_folder(folder: Path, budget_gb: float = BUDGET_GB) -> ImageDataset:
    """A folder of MNIST-format files: train-* and, when present, t10k-* appended after it.

    Each file is checked against `budget_gb` on its own.
    """
    parts = [read_idx_images(p, require_labels=True, budget_gb=budget_gb)
             for p in (_find_idx(folder, f"{part}-images-idx3-ubyte") for part in IDX_PARTS) if p is not None]
    shapes = {tuple(p.images.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise DataError(f"{folder}: train and t10k images differ in shape {sorted(shapes)}; expected one shape")
    labels = torch.cat([p.labels for p in parts])
    classes = [str(i) for i in range(int(labels.max()) + 1)]
    return ImageDataset(torch.cat([p.images for p in parts]), labels, classes, str(folder), str(folder.resolve()))


def _find_idx(folder: Path, stem: str) -> Path | None:
    """`stem` in `folder`, spelled with "-idx" or ".idx" (both circulate), raw or .gz; raw files first."""
    dashed = stem.replace(".idx", "-idx")
    names = [name + gz for gz in ("", ".gz") for name in (dashed, dashed.replace("-idx", ".idx"))]
    return next((folder / name for name in names if (folder / name).is_file()), None)


# ---------------------------------------------------------------------------------------------
# .npz archives

def read_npz(path: Path, budget_gb: float = BUDGET_GB) -> ImageDataset:
    """A .npz with `images` (N,H,W), (N,H,W,C) or (N,C,H,W) [C = 1 or 3] and optional `labels`, `classes`.

    Pickled object arrays are refused (loading them could run code), and the arrays' .npy headers are
    checked against `budget_gb` before anything is decompressed.
    """
    headers = npz_headers(path)
    declared = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    images_shape = headers.get("images", ((), None))[0]
    check_memory(declared + 4 * math.prod(images_shape), budget_gb, str(path),
                 f"its arrays ({', '.join(f'{k} {s}' for k, (s, _) in headers.items())}) as float32 images")
    arrays = npz_arrays(path, headers)
    if "images" not in arrays:
        raise DataError(f"{path}: no `images` array (found: {', '.join(arrays) or 'none'}); expected `images` "
                        "of shape (N, H, W), (N, H, W, C) or (N, C, H, W)")
    images = _to_nchw(arrays["images"], path)
    labels, classes = None, []
    if "labels" in arrays:
        labels = check_labels(arrays["labels"], f"{path} `labels`", len(images))
        names = arrays.get("classes")
        if names is not None and names.ndim != 1:
            raise DataError(f"{path}: `classes` has shape {names.shape}; expected a 1-D array of class names")
        classes = ([str(c) for c in names.tolist()] if names is not None
                   else [str(i) for i in range(int(labels.max()) + 1)])
        if labels.max() >= len(classes):
            raise DataError(f"{path}: `labels` goes up to {labels.max()} but `classes` names only {len(classes)}; "
                            "expected a class name for every label id")
    return ImageDataset(to_float_images(images, f"{path} `images`"), labels, classes, str(path), str(path.resolve()))


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Array name -> (shape, dtype) from each member's .npy header, without decompressing the data."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in (m for m in archive.namelist() if m.endswith(".npy")):
                with archive.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        raise ValueError(f"`{member}` has .npy format version {version}; expected 1.0 or 2.0")
                    shape, _, dtype = read(fh)
                if dtype.hasobject:
                    raise ValueError(f"`{member}` holds Python objects (pickled)")
                headers[member.removesuffix(".npy")] = (shape, dtype)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: cannot read as .npz ({e}); expected a numpy .npz archive "
                        "without object (pickled) arrays") from e
    return headers


def npz_arrays(path: Path, headers: dict) -> dict[str, np.ndarray]:
    """The arrays `headers` lists; numpy reads each member only as far as its header declares."""
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = {}
            for name in headers:
                with archive.open(f"{name}.npy") as fh:
                    arrays[name] = np.lib.format.read_array(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt .npz data ({e}); expected arrays as long as their headers declare") from e
    return arrays


def _to_nchw(images: np.ndarray, path: Path) -> np.ndarray:
    """Bring `images` to (N, C, H, W). A 4-D array whose last axis is 1 or 3 is read as (N, H, W, C)."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    elif not (images.ndim == 4 and images.shape[1] in (1, 3)):
        raise DataError(f"{path}: `images` has shape {images.shape}; expected (N, H, W), (N, H, W, C) or "
                        "(N, C, H, W) with C = 1 or 3")
    if images.size == 0:
        raise DataError(f"{path}: `images` has shape {images.shape}; expected at least one image")
    return images
