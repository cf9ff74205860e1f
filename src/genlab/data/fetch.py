"""Download MNIST and Fashion-MNIST into the cache, checking every file's SHA-256.

Files land in `<cache>/datasets/<name>/` as the four standard IDX .gz files, which the IDX reader
loads directly. The cache is `$GENLAB_CACHE`, else `~/.cache/genlab`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from contextlib import nullcontext
from pathlib import Path

from genlab.data.images import DataError

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",  # PyTorch's mirror of yann.lecun.com
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

# SHA-256 of the published files, as listed (with their sizes) in tensorflow_datasets'
# url_checksums/mnist.txt and url_checksums/fashion_mnist.txt.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # 9912422 B
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",  # 28881 B
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",  # 1648877 B
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",  # 4542 B
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",  # 26421880 B
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",  # 29515 B
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",  # 4422102 B
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",  # 5148 B
    },
}

TIMEOUT_S = 60  # per network read; a stalled mirror fails instead of hanging forever
CHUNK = 1 << 20


class FetchError(DataError):
    """A download failed or did not match its published checksum."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else `$GENLAB_CACHE`, else `~/.cache/genlab`."""
    return Path(cache_dir or os.environ.get("GENLAB_CACHE") or Path.home() / ".cache" / "genlab").expanduser()


def dataset_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `fetch(name)` puts its files: `<cache>/datasets/<name>`."""
    return cache_root(cache_dir) / "datasets" / name


def is_fetched(name: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether all of `name`'s files are in the cache (they only arrive there after their checksum passed)."""
    folder = dataset_dir(name, cache_dir)
    return all((folder / f).is_file() for f in FILES)


def fetch(name: str, cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
          progress: bool = True, checksums: dict[str, str] | None = None) -> Path:
    """Download dataset `name` ("mnist" or "fashion-mnist") into the cache and return its folder.

    Files already there with the right SHA-256 are kept. Each download goes to a temp file beside its
    target and is renamed into place only after its hash matched, so the cache never holds a partial
    or corrupt file. `base_url` and `checksums` (file name -> sha256) point it at another server.
    """
    if name not in MIRRORS:
        raise FetchError(f"cannot fetch {name!r}; fetchable datasets: {', '.join(MIRRORS)}")
    expected = checksums or CHECKSUMS[name]
    missing = [f for f in FILES if f not in expected]
    if missing:
        raise FetchError(f"checksums for {name} lack {', '.join(missing)}; expected a sha256 for each of {FILES}")
    folder = dataset_dir(name, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    base = (base_url or MIRRORS[name]).rstrip("/") + "/"
    todo = [f for f in FILES if not (folder / f).is_file() or sha256_file(folder / f) != expected[f]]
    bar = _progress_bar() if progress and todo else None
    with bar or nullcontext():
        for f in todo:
            _download(base + f, folder / f, expected[f], bar)
    return folder


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, sha256: str, bar) -> None:
    """Stream `url` into a temp file beside `dest`, check its hash, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    task = bar.add_task(dest.name, total=total) if bar else None
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        if bar:
                            bar.update(task, advance=len(chunk))
            except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as e:
                raise FetchError(f"could not download {url}: {e}; check the connection, or pass base_url "
                                 "to use another mirror") from e
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if actual != sha256:
            raise FetchError(f"{url}: SHA-256 mismatch for {dest.name}: expected {sha256}, got {actual}; "
                             "the download was discarded (corrupt transfer or a changed mirror)")
        os.replace(tmp, dest)
    except BaseException:  # includes Ctrl-C: never leave a partial file behind
        Path(tmp).unlink(missing_ok=True)
        raise


def _progress_bar():
    # Imported lazily: rich is only needed when a progress bar is shown.
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
