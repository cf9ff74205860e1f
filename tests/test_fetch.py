"""Downloads with checksums, against a local HTTP server serving small MNIST-format files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch

from genlab.config import DataConfig
from genlab.data import load_images
from genlab.data.fetch import FILES, FetchError, fetch
from test_data import write_idx


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local server with the four MNIST files (20 train, 5 test images); yields url, data, checksums, hits."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a configured proxy must not intercept the local server
    root = tmp_path / "mirror"
    root.mkdir()
    rng = np.random.default_rng(0)
    data = {"train": (rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20, dtype=np.uint8)),
            "t10k": (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 10, 5, dtype=np.uint8))}
    for part, (images, labels) in data.items():
        write_idx(root / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{part}-labels-idx1-ubyte.gz", labels)
    checksums = {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in FILES}
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep test output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", data, checksums, hits
    server.shutdown()
    server.server_close()
    thread.join()


def test_fetch_then_load(tmp_path, mirror, monkeypatch):
    url, data, checksums, hits = mirror
    folder = fetch("mnist", cache_dir=tmp_path / "cache", base_url=url, checksums=checksums, progress=False)
    assert folder == tmp_path / "cache" / "datasets" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert len(hits) == 4

    ds = load_images(DataConfig(name=str(folder)))
    images = np.concatenate([data["train"][0], data["t10k"][0]])
    labels = np.concatenate([data["train"][1], data["t10k"][1]])
    assert ds.images.shape == (25, 1, 28, 28)
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
    assert torch.allclose(ds.images[:, 0], torch.from_numpy(images / 127.5 - 1).float(), atol=1e-6)

    # The built-in name reads the same files from the cache.
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    by_name = load_images(DataConfig(name="mnist"))
    assert by_name.name == "mnist" and torch.equal(by_name.images, ds.images)


def test_second_fetch_downloads_only_what_is_missing_or_corrupt(tmp_path, mirror):
    url, _, checksums, hits = mirror
    folder = fetch("fashion-mnist", cache_dir=tmp_path, base_url=url, checksums=checksums, progress=False)
    fetch("fashion-mnist", cache_dir=tmp_path, base_url=url, checksums=checksums, progress=False)
    assert len(hits) == 4
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    fetch("fashion-mnist", cache_dir=tmp_path, base_url=url, checksums=checksums, progress=True)
    assert hits[4:] == ["/t10k-labels-idx1-ubyte.gz"]
    assert load_images(DataConfig(name=str(folder))).labels is not None


def test_wrong_checksum_raises_and_leaves_nothing(tmp_path, mirror):
    url, _, checksums, _ = mirror
    wrong = dict(checksums, **{"train-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(FetchError) as err:
        fetch("mnist", cache_dir=tmp_path, base_url=url, checksums=wrong, progress=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "0" * 64 in msg and checksums["train-images-idx3-ubyte.gz"] in msg
    assert list((tmp_path / "datasets" / "mnist").iterdir()) == []


def test_missing_file_and_unknown_name_are_clear_errors(tmp_path, mirror):
    url, _, checksums, _ = mirror
    with pytest.raises(FetchError, match="could not download .*404"):
        fetch("mnist", cache_dir=tmp_path, base_url=url + "elsewhere/", checksums=checksums, progress=False)
    assert list((tmp_path / "datasets" / "mnist").iterdir()) == []
    with pytest.raises(FetchError, match="fetchable datasets: mnist, fashion-mnist"):
        fetch("cifar10", cache_dir=tmp_path)
