"""Bad input to the image readers: foreign formats, sizes that headers overstate, bad labels, empty files."""

from __future__ import annotations

import gzip
import io
import logging
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genlab.config import DataConfig
from genlab.data import DataError, load_images
from genlab.data import readers

from test_data import grey, write_idx, write_png


def idx_bytes(type_byte: int, dims: tuple[int, ...], payload: bytes = b"") -> bytes:
    """An IDX file with any header, whatever the payload really holds."""
    return bytes([0, 0, type_byte, len(dims)]) + np.array(dims, ">u4").tobytes() + payload


def npz_with_header(path: Path, shape: tuple[int, ...], descr: str = "<f8", payload: bytes = b"") -> Path:
    """A .npz whose `images.npy` header claims `shape`, followed by only `payload`."""
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": descr, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", member.getvalue() + payload)
    return path


def load(path: Path, **kw):
    return load_images(DataConfig(name=str(path), **kw))


# ---------------------------------------------------------------------------------------------
# Only PNG and JPEG reach Pillow's plugins

def test_postscript_named_png_never_reaches_the_eps_plugin(tmp_path, monkeypatch, caplog):
    for i in range(2):
        write_png(tmp_path / f"ok{i}.png", grey(50))
    (tmp_path / "evil.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    Image.init()  # register every plugin first, so the recorder below replaces the real EPS one
    calls = []
    monkeypatch.setitem(Image.OPEN, "EPS", (lambda fp, name: calls.append(name), lambda prefix: True))
    with caplog.at_level(logging.WARNING, logger="genlab.data"):
        ds = load(tmp_path)
    assert calls == [] and len(ds) == 2
    assert "dropped 1 unreadable files" in caplog.text and "evil.png" in caplog.text


def test_damaged_files_are_dropped_and_counted_whatever_pillow_raises(tmp_path, caplog):
    """Pillow raises SyntaxError for a broken PNG chunk, OSError or ValueError for others: all are dropped."""
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(good, "PNG")
    data = good.getvalue()
    for i in range(3):
        (tmp_path / f"ok{i}.png").write_bytes(data)
    chunk = bytearray(data)
    chunk[36] = 0   # the IDAT length's low byte: the next chunk header is read mid-data -> SyntaxError
    (tmp_path / "syntax.png").write_bytes(bytes(chunk))
    (tmp_path / "short.png").write_bytes(data[:30])       # a truncated IHDR -> ValueError / OSError
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(SyntaxError):
        with Image.open(tmp_path / "syntax.png", formats=["PNG"]) as im:
            im.load()
    with caplog.at_level(logging.WARNING, logger="genlab.data"):
        ds = load(tmp_path)
    assert len(ds) == 3 and "dropped 3 unreadable files" in caplog.text


# ---------------------------------------------------------------------------------------------
# Declared sizes are checked against data.memory_budget_gb before allocating

def test_png_whose_size_exceeds_the_budget_is_refused_before_decoding(tmp_path):
    big = write_png(tmp_path / "big.png", np.zeros((2000, 2000), np.uint8))  # a few KB on disk, 4M pixels
    assert big.stat().st_size < 100_000
    with pytest.raises(DataError, match="memory_budget_gb=0.01") as err:
        load(tmp_path, memory_budget_gb=0.01)
    assert str(big) in str(err.value) and "2000x2000" in str(err.value)
    assert len(load(tmp_path)) == 1  # the default budget takes it


def test_gzipped_idx_over_budget_is_refused_before_decompressing(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2000, 28, 28), np.uint8))  # 1.5 MB inflated
    with pytest.raises(DataError, match="memory_budget_gb=0.001") as err:
        load(tmp_path / "train-images-idx3-ubyte.gz", memory_budget_gb=0.001)
    assert "train-images-idx3-ubyte.gz" in str(err.value) and "(2000, 28, 28)" in str(err.value)


def test_gzipped_idx_longer_than_declared_stops_decompressing_at_the_declared_size(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (1, 28, 28), bytes(40_000_000))))  # a 40 MB bomb, ~40 KB
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="too long IDX file") as err:
            load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(err.value) and peak < 5_000_000


@pytest.mark.parametrize("shape,budget", [((3000, 28, 28), 0.01), ((8_000_000, 1000, 1000), 4.0)],
                         ids=["small-budget", "58TiB"])
def test_npz_header_over_budget_is_refused_before_reading(tmp_path, shape, budget):
    path = npz_with_header(tmp_path / "x.npz", shape, payload=bytes(64))
    with pytest.raises(DataError, match=f"memory_budget_gb={budget:g}") as err:
        load(path, memory_budget_gb=budget)
    assert str(path) in str(err.value) and str(shape) in str(err.value)


def test_npz_array_shorter_than_its_header_is_a_data_error(tmp_path):
    path = npz_with_header(tmp_path / "x.npz", (4, 8, 8), descr="|u1", payload=bytes(10))
    with pytest.raises(DataError, match="corrupt .npz data") as err:
        load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("count,budget", [(3000, 0.01), (10**9, 4.0)])
def test_shapes_count_over_budget_is_refused_before_drawing(count, budget):
    with pytest.raises(DataError, match=f"data.count={count}.*memory_budget_gb={budget:g}"):
        load_images(DataConfig(name="shapes", count=count, memory_budget_gb=budget))


def test_memory_error_while_reading_becomes_a_data_error(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((2, 4, 4), np.uint8))

    def no_memory(*args):
        raise MemoryError

    monkeypatch.setattr(readers, "to_float_images", no_memory)
    with pytest.raises(DataError, match="ran out of memory") as err:
        load(path)
    assert str(path) in str(err.value)


def test_image_size_over_budget_is_refused_before_resizing(tmp_path):
    write_png(tmp_path / "a.png", grey(0, 4, 4))
    with pytest.raises(DataError, match="resizing 1 images to data.image_size=1000000.*memory_budget_gb=4") as err:
        load(tmp_path, image_size=10**6)
    assert str(tmp_path) in str(err.value)
    write_png(tmp_path / "b.png", grey(0, 4, 8))  # mixed sizes are resized while reading
    with pytest.raises(DataError, match="resizing to data.image_size=1000000.*memory_budget_gb=4"):
        load(tmp_path, image_size=10**6)


@pytest.mark.parametrize("budget", [0.0, -1.0])
def test_memory_budget_must_be_positive(budget):
    with pytest.raises(DataError, match=f"data.memory_budget_gb={budget}"):
        load_images(DataConfig(name="digits", memory_budget_gb=budget))


# ---------------------------------------------------------------------------------------------
# Labels, empty files and header dims

def write_idx_pair(folder: Path, labels_idx: bytes, n: int = 4) -> Path:
    images = write_idx(folder / "train-images-idx3-ubyte", np.zeros((n, 4, 4), np.uint8))
    (folder / "train-labels-idx1-ubyte").write_bytes(labels_idx)
    return images


@pytest.mark.parametrize("labels_idx,shown", [
    (idx_bytes(0x09, (4,), np.array([0, 1, -1, 2], "i1").tobytes()), "[-1, 2]"),              # negative
    (idx_bytes(0x0D, (4,), np.array([0, 1, np.nan, 2], ">f4").tobytes()), "dtype >f4"),      # NaN (float)
    (idx_bytes(0x0C, (4,), np.array([0, 1, 20_000, 2], ">i4").tobytes()), "[0, 20000]"),     # too many classes
    (idx_bytes(0x0C, (4,), np.array([0, 1, 2**31 - 1, 2], ">i4").tobytes()), "2147483647"),  # near 2^31
], ids=["negative", "nan", "too-many", "near-2^31"])
def test_idx_labels_must_be_class_ids(tmp_path, labels_idx, shown):
    write_idx_pair(tmp_path, labels_idx)
    with pytest.raises(DataError, match="class ids") as err:
        load(tmp_path)
    assert str(tmp_path / "train-labels-idx1-ubyte") in str(err.value) and shown in str(err.value)


@pytest.mark.parametrize("top", [20_000, 2**62])
def test_npz_label_ids_are_capped(tmp_path, top):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, top], np.int64))
    with pytest.raises(DataError, match=f"label ids span \\[0, {top}\\]; expected class ids from 0 to 9999"):
        load(path)


@pytest.mark.parametrize("classes", [np.asarray("ab"), np.asarray(5)])
def test_npz_scalar_classes_is_an_error(tmp_path, classes):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 1]), classes=classes)
    with pytest.raises(DataError, match=r"`classes` has shape \(\); expected a 1-D array") as err:
        load(path)
    assert str(path) in str(err.value)


def test_empty_idx_file_is_an_error(tmp_path):
    images = write_idx_pair(tmp_path, idx_bytes(0x08, (0,)), n=0)
    for target in (tmp_path, images):
        with pytest.raises(DataError, match=r"empty IDX file: dims \(0, 4, 4\)") as err:
            load(target)
        assert str(images) in str(err.value)


def test_npz_with_zero_sized_images_is_an_error(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((3, 0, 0), np.uint8))
    with pytest.raises(DataError, match="expected at least one image"):
        load(path)


def test_idx_dims_that_overflow_int64_name_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(0x08, (65536, 65536, 65536, 65536)))  # product 2^64: 0 in int64
    with pytest.raises(DataError, match="truncated IDX file") as err:
        load(path)
    assert str(path) in str(err.value) and str(2**64) in str(err.value)


def test_unreadable_idx_and_npz_paths_are_data_errors(tmp_path):
    not_zip = tmp_path / "a.npz"
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 4)))
    (tmp_path / "a.npy").rename(not_zip)  # a bare .npy named .npz
    with pytest.raises(DataError, match="cannot read as .npz"):
        load(not_zip)
    truncated = tmp_path / "train-images-idx3-ubyte.gz"
    truncated.write_bytes(gzip.compress(idx_bytes(0x08, (2, 4, 4), bytes(32)))[:-12])
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        load(truncated)
    assert str(truncated) in str(err.value)


# ---------------------------------------------------------------------------------------------
# MNIST names with dots (train-images.idx3-ubyte)

@pytest.mark.parametrize("ext", ["", ".gz"])
def test_mnist_names_with_dots_are_read(tmp_path, ext):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 5, 5), dtype=np.uint8), np.array([0, 1, 2, 0, 1, 2], np.uint8)
    write_idx(tmp_path / f"train-images.idx3-ubyte{ext}", images)
    write_idx(tmp_path / f"train-labels.idx1-ubyte{ext}", labels)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", images[:2])   # the dashed spelling beside it
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", labels[:2])
    ds = load(tmp_path, conditional=True)
    assert ds.images.shape == (8, 1, 5, 5) and ds.labels.tolist() == labels.tolist() + labels[:2].tolist()
    direct = load(tmp_path / f"train-images.idx3-ubyte{ext}", conditional=True)
    assert direct.labels.tolist() == labels.tolist() and direct.classes == ["0", "1", "2"]
