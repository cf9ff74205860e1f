"""Data loading: built-ins, image folders, IDX and .npz files, preprocessing, splits and image output."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.config import DataConfig
from genlab.data import BUILTINS, DataError, ImageDataset, load_images, split
from genlab.data.builtin import SHAPES, shapes
from genlab.imageio import make_grid, save_grid, save_npz, to_uint8


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array in MNIST's IDX format (gzipped when the name ends in .gz)."""
    data = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes() + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def grey(value: int, h: int = 6, w: int = 6) -> np.ndarray:
    return np.full((h, w), value, np.uint8)


# ---------------------------------------------------------------------------------------------
# Built-ins

def test_digits_shape_range_and_labels():
    ds = load_images(DataConfig(name="digits"))
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == torch.float32
    assert ds.images.min() == -1 and ds.images.max() == 1
    # sklearn's values are integers 0..16, so (x + 1) * 8 must land on integers.
    scaled = (ds.images + 1) * 8
    assert torch.allclose(scaled, scaled.round(), atol=1e-5)
    assert ds.classes == [str(i) for i in range(10)]
    assert torch.equal(ds.labels.unique(), torch.arange(10))


def test_shapes_are_seeded_balanced_and_drawn():
    a = load_images(DataConfig(name="shapes", count=64, seed=3))
    b = load_images(DataConfig(name="shapes", count=64, seed=3))
    c = load_images(DataConfig(name="shapes", count=64, seed=4))
    assert a.images.shape == (64, 3, 32, 32)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.classes == SHAPES and torch.equal(a.labels.bincount(), torch.full((4,), 16))
    assert a.images.min() >= -1 and a.images.max() <= 1
    # Every image holds a bright shape on a dark background.
    brightest = a.images.amax(dim=(1, 2, 3))
    darkest = a.images.amin(dim=(1, 2, 3))
    assert (brightest > 0.4).all() and (darkest < -0.4).all()


def test_shapes_area_differs_by_class():
    # A square of half side 0.75 r covers more of its circumradius circle than a star does.
    ds = shapes(400, seed=0)
    bright = (ds.images.amax(dim=1) > 0.3).float().mean(dim=(1, 2))  # fraction of shape pixels
    mean_area = torch.stack([bright[ds.labels == k].mean() for k in range(len(SHAPES))])
    assert mean_area[SHAPES.index("star")] < mean_area[SHAPES.index("triangle")] < mean_area[SHAPES.index("circle")]


def test_unknown_name_lists_builtins_and_path_kinds(tmp_path):
    with pytest.raises(DataError) as err:
        load_images(DataConfig(name=str(tmp_path / "nope")))
    for name in BUILTINS:
        assert name in str(err.value)
    assert "folder" in str(err.value) and ".npz" in str(err.value)


def test_unfetched_mnist_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="genlab data fetch fashion-mnist"):
        load_images(DataConfig(name="fashion-mnist"))


# ---------------------------------------------------------------------------------------------
# Image folders

def test_class_subfolders_give_labels_and_colour_wins(tmp_path):
    write_png(tmp_path / "dogs" / "a.png", np.zeros((6, 6, 3)) + [255, 0, 0])
    write_png(tmp_path / "cats" / "b.png", grey(255))
    write_png(tmp_path / "cats" / "nested" / "c.jpg", grey(0))
    ds = load_images(DataConfig(name=str(tmp_path)))
    assert ds.classes == ["cats", "dogs"]
    assert ds.images.shape == (3, 3, 6, 6)            # one colour image makes all RGB
    assert ds.labels.tolist() == [0, 0, 1]             # sorted files: cats/b, cats/nested/c, dogs/a
    assert torch.allclose(ds.images[0], torch.ones(3, 6, 6))
    assert torch.allclose(ds.images[2, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


def test_flat_grey_folder_is_unlabeled(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png", grey(i * 100))
    ds = load_images(DataConfig(name=str(tmp_path)))
    assert ds.images.shape == (3, 1, 6, 6) and ds.labels is None and ds.classes == []
    assert ds.images[0].max() == -1 and abs(ds.images[1].mean() - (100 / 127.5 - 1)) < 1e-6


def test_a_folder_with_class_sub_folders_and_loose_images_is_an_error(tmp_path):
    """Which label a loose image should get is not clear (genlab.data.folders, shared by images, audio and video);
    hidden files and folders are no data, so they neither count as loose nor as a class."""
    write_png(tmp_path / "cats" / "a.png", grey(10))
    write_png(tmp_path / ".thumbs" / "t.png", grey(10))
    write_png(tmp_path / ".hidden.png", grey(10))
    assert load_images(DataConfig(name=str(tmp_path))).classes == ["cats"]
    write_png(tmp_path / "LOOSE.PNG", grey(10))
    with pytest.raises(DataError, match=r"class sub-folders \(cats\) and also images at the top level \(e\.g\. "
                                        r"LOOSE\.PNG\); move each of them into a class sub-folder"):
        load_images(DataConfig(name=str(tmp_path)))


def test_unreadable_files_are_dropped_and_counted(tmp_path, caplog):
    for i in range(2):
        write_png(tmp_path / f"ok{i}.png", grey(50))
    (tmp_path / "a_garbage.png").write_bytes(b"not an image at all")
    good = (tmp_path / "ok0.png").read_bytes()
    (tmp_path / "b_truncated.png").write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING, logger="genlab.data"):
        ds = load_images(DataConfig(name=str(tmp_path)))
    assert len(ds) == 2
    assert f"dropped 2 unreadable files in {tmp_path}" in caplog.text
    assert "a_garbage.png" in caplog.text


def test_empty_or_all_unreadable_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no PNG or JPEG images") as err:
        load_images(DataConfig(name=str(tmp_path)))
    assert str(tmp_path) in str(err.value)
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the 1 image files could be read"):
        load_images(DataConfig(name=str(tmp_path)))


def test_mixed_sizes_need_image_size(tmp_path):
    write_png(tmp_path / "a.png", grey(0, 8, 8))
    write_png(tmp_path / "b.png", grey(255, 4, 8))   # 8 wide, 4 high
    with pytest.raises(DataError) as err:
        load_images(DataConfig(name=str(tmp_path)))
    msg = str(err.value)
    assert str(tmp_path / "b.png") in msg and "8x4" in msg and "8x8" in msg and "--image-size" in msg
    ds = load_images(DataConfig(name=str(tmp_path), image_size=8))
    assert ds.images.shape == (2, 1, 8, 8)
    # The 8x4 white image is centred on a square of background (-1): rows 0-1 and 6-7 are padding.
    assert (ds.images[1, 0, 2:6] == 1).all() and (ds.images[1, 0, :2] == -1).all() and (ds.images[1, 0, 6:] == -1).all()


def test_conditional_on_unlabeled_data_is_an_error(tmp_path):
    write_png(tmp_path / "a.png", grey(0))
    with pytest.raises(DataError, match="has no labels") as err:
        load_images(DataConfig(name=str(tmp_path), conditional=True))
    assert str(tmp_path) in str(err.value)


# ---------------------------------------------------------------------------------------------
# IDX files

def idx_folder(folder: Path, n: int = 20, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", labels)
    return images, labels


def test_idx_folder_appends_t10k_and_direct_file_finds_labels(tmp_path):
    images, labels = idx_folder(tmp_path, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:5])   # raw, not gzipped
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:5])
    ds = load_images(DataConfig(name=str(tmp_path)))
    assert ds.images.shape == (25, 1, 28, 28)
    assert torch.equal(ds.labels, torch.from_numpy(np.concatenate([labels, labels[:5]]).astype(np.int64)))
    assert torch.allclose(ds.images[:20, 0], torch.from_numpy(images / 127.5 - 1).float(), atol=1e-6)

    direct = load_images(DataConfig(name=str(tmp_path / "t10k-images-idx3-ubyte"), conditional=True))
    assert len(direct) == 5 and direct.labels.tolist() == labels[:5].tolist()


def test_idx_bad_magic_names_the_file(tmp_path):
    idx_folder(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + bytes(100)))
    with pytest.raises(DataError, match="magic") as err:
        load_images(DataConfig(name=str(tmp_path)))
    assert str(bad) in str(err.value)


def test_idx_truncated_names_the_file_and_expected_size(tmp_path):
    idx_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as err:
        load_images(DataConfig(name=str(tmp_path)))
    assert str(path) in str(err.value) and str(20 * 28 * 28) in str(err.value)


def test_idx_label_count_mismatch(tmp_path):
    _, labels = idx_folder(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:7])
    with pytest.raises(DataError, match=r"expected shape \(20,\)") as err:
        load_images(DataConfig(name=str(tmp_path)))
    assert "train-labels-idx1-ubyte.gz" in str(err.value)


# ---------------------------------------------------------------------------------------------
# .npz files

def test_npz_wrong_shape_names_array_and_shape(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 5, 6, 7), np.uint8))
    with pytest.raises(DataError) as err:
        load_images(DataConfig(name=str(path)))
    msg = str(err.value)
    assert str(path) in msg and "`images`" in msg and "(4, 5, 6, 7)" in msg and "(N, C, H, W)" in msg


def test_npz_round_trip_through_save_npz(tmp_path):
    ds = shapes(12, seed=1)
    path = save_npz(tmp_path / "out.npz", ds.images, ds.labels, ds.classes)
    back = load_images(DataConfig(name=str(path), conditional=True))
    assert back.images.shape == ds.images.shape and back.classes == SHAPES
    assert torch.equal(back.labels, ds.labels)
    assert (back.images - ds.images).abs().max() <= 1 / 127.5   # uint8 quantisation only
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]   # no temp file left behind


def test_npz_float_nchw_in_unit_range(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, images=np.full((3, 1, 5, 5), 0.5, np.float32), labels=np.array([0, 2, 1]))
    ds = load_images(DataConfig(name=str(path)))
    assert ds.images.shape == (3, 1, 5, 5) and torch.allclose(ds.images, torch.zeros(3, 1, 5, 5))
    assert ds.classes == ["0", "1", "2"]


# ---------------------------------------------------------------------------------------------
# Preprocessing and splits

def test_image_size_resizes_builtins():
    ds = load_images(DataConfig(name="digits", image_size=16))
    assert ds.images.shape == (1797, 1, 16, 16)
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    assert load_images(DataConfig(name="shapes", count=8, image_size=12)).images.shape == (8, 3, 12, 12)


def test_split_is_deterministic_and_disjoint():
    ds = ImageDataset(torch.zeros(50, 1, 2, 2), torch.arange(50), [str(i) for i in range(50)])
    train, val = split(ds, 0.2, seed=7)
    train2, val2 = split(ds, 0.2, seed=7)
    assert torch.equal(train.labels, train2.labels) and torch.equal(val.labels, val2.labels)
    assert len(val) == 10 and len(train) == 40
    assert set(train.labels.tolist()).isdisjoint(val.labels.tolist())
    assert set(train.labels.tolist()) | set(val.labels.tolist()) == set(range(50))
    assert not torch.equal(split(ds, 0.2, seed=8)[1].labels, val.labels)


# ---------------------------------------------------------------------------------------------
# Image output

def test_to_uint8_and_make_grid():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4)
    assert to_uint8(x).tolist() == [[[[0], [128], [255], [255]]]]
    grid = make_grid(torch.zeros(5, 3, 3, 4), nrow=2, pad=1)
    assert grid.shape == (3 * (3 + 1) + 1, 2 * (4 + 1) + 1, 3)


def test_save_grid_writes_png_metadata_and_upscales(tmp_path):
    ds = load_images(DataConfig(name="digits"))
    path = save_grid(ds.images[:16], tmp_path / "grid.png", metadata={"family": "vae", "step": "100"})
    with Image.open(path) as im:
        assert im.text == {"family": "vae", "step": "100"}
        assert im.mode == "L" and im.width >= 256
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
