"""Download public datasets into the cache, checking every file's SHA-256.

Images: MNIST and Fashion-MNIST land in `<cache>/datasets/<name>/` as the four standard IDX .gz
files, which the IDX reader loads directly. Text: `tinyshakespeare` (one input.txt), `imdb` (the
aclImdb archive, unpacked to aclImdb/{train,test}/{pos,neg}/*.txt) and `multi30k` (the English-German
train and validation archives, unpacked to train.en/.de and val.en/.de). Audio: `fsdd` (the Free Spoken
Digit Dataset's v1.0.9 archive, unpacked to recordings/{digit}_{speaker}_{index}.wav). Archives are unpacked only
after their hash matched, member by member to paths we build (absolute paths and '..' are refused).
The cache is `$GENLAB_CACHE`, else `~/.cache/genlab`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from contextlib import nullcontext
from pathlib import Path, PurePosixPath

from genlab.errors import DataError

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# The files each dataset downloads (from its mirror), and what must exist once it is ready to read.
DATASET_FILES = {
    "mnist": FILES,
    "fashion-mnist": FILES,
    "tinyshakespeare": ("input.txt",),
    "imdb": ("aclImdb_v1.tar.gz",),
    "multi30k": ("training.tar.gz", "validation.tar.gz"),
    "fsdd": ("v1.0.9.tar.gz",),
}
READY = dict(DATASET_FILES, **{
    "imdb": ("aclImdb/train", "aclImdb/test"),
    "multi30k": ("train.en", "train.de", "val.en", "val.de"),
    "fsdd": ("recordings",),
})

MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",  # PyTorch's mirror of yann.lecun.com
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "tinyshakespeare": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",
    "imdb": "https://ai.stanford.edu/~amaas/data/sentiment/",
    # The original host (www.quest.dcs.shef.ac.uk/wmt16_files_mmt/) is gone; torchtext moved to this mirror.
    "multi30k": "https://raw.githubusercontent.com/neychev/small_DL_repo/master/datasets/Multi30k/",
    # GitHub's archive of the v1.0.9 tag, as tensorflow_datasets' spoken_digit downloads it.
    "fsdd": "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/",
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
    # tensorflow_datasets url_checksums/tiny_shakespeare.txt
    "tinyshakespeare": {
        "input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",  # 1115394 B
    },
    # tensorflow_datasets url_checksums/imdb_reviews.txt
    "imdb": {
        "aclImdb_v1.tar.gz": "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",  # 84125825 B
    },
    # torchtext/datasets/multi30k.py (its `MD5` table holds SHA-256 values, checked with hash_type="sha256");
    # torchtext switched to the mirror above keeping these two hashes (pytorch/text PR #2194).
    "multi30k": {
        "training.tar.gz": "20140d013d05dd9a72dfde46478663ba05737ce983f478f960c1123c6671be5e",
        "validation.tar.gz": "a7aa20e9ebd5ba5adce7909498b94410996040857154dab029851af3a866da8c",
    },
    # tensorflow_datasets audio/spoken_digit/checksums.tsv
    "fsdd": {
        "v1.0.9.tar.gz": "8bc44cde129d505cbbb6b365c09f80c663f2aa77578afc634e6141a2f87100c0",  # 11975353 B
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
    return name in READY and all((folder / f).exists() for f in READY[name])


def fetch(name: str, cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
          progress: bool = True, checksums: dict[str, str | None] | None = None) -> Path:
    """Download dataset `name` (see `MIRRORS`) into the cache, unpack archives, and return its folder.

    Files already there with the right SHA-256 are kept. Each download goes to a temp file beside its
    target and is renamed into place only after its hash matched, so the cache never holds a partial
    or corrupt file. `base_url` and `checksums` (file name -> sha256) point it at another server. A
    checksum of None (no published hash) downloads the file, discards it and raises a FetchError
    giving its SHA-256, to be checked against a trusted source and passed back in `checksums`.
    """
    if name not in MIRRORS:
        raise FetchError(f"cannot fetch {name!r}; fetchable datasets: {', '.join(MIRRORS)}")
    files = DATASET_FILES[name]
    expected = checksums or CHECKSUMS[name]
    missing = [f for f in files if f not in expected]
    if missing:
        raise FetchError(f"checksums for {name} lack {', '.join(missing)}; expected a sha256 for each of {files}")
    folder = dataset_dir(name, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    base = (base_url or MIRRORS[name]).rstrip("/") + "/"
    todo = [f for f in files if not (folder / f).is_file() or sha256_file(folder / f) != expected[f]]
    bar = _progress_bar() if progress and todo else None
    with bar or nullcontext():
        for f in todo:
            _download(base + f, folder / f, expected[f], bar)
    if name in UNPACK and (todo or not is_fetched(name, cache_dir)):
        UNPACK[name](folder)
    return folder


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, sha256: str | None, bar) -> None:
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
        if sha256 is None:
            raise FetchError(f"{url}: no published SHA-256 is known for {dest.name}, so the download was discarded. "
                             f"Its SHA-256 is {actual}; check it against a source you trust, then pass "
                             f"checksums={{{dest.name!r}: {actual!r}, ...}} (one entry per file) to fetch() "
                             "to accept it")
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


# ---------------------------------------------------------------------------------------------
# Unpacking archives (after their hash matched)

def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """All members, after refusing the archive if any name is absolute or climbs out with '..'."""
    members = tar.getmembers()
    for m in members:
        name = m.name.replace("\\", "/")
        p = PurePosixPath(name)
        drive = bool(p.parts) and ":" in p.parts[0]  # "C:/..." on Windows
        if p.is_absolute() or drive or ".." in p.parts:
            raise FetchError(f"{archive.name}: refusing to unpack member {m.name!r}: absolute paths and '..' "
                             "could write outside the cache (a damaged or malicious archive)")
    return members


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise FetchError(f"{archive}: cannot open as a tar archive: {e}; delete it and fetch again") from e


def _write_member(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: Path) -> None:
    """Copy one regular-file member to `dest` (a path we chose, never the member's own name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(m)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unpack_imdb(folder: Path) -> None:
    """aclImdb_v1.tar.gz -> aclImdb/{train,test}/{pos,neg}/*.txt (the 50,000 unlabelled reviews are skipped)."""
    archive = folder / "aclImdb_v1.tar.gz"
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".aclImdb."))
    try:
        with _open_tar(archive) as tar:
            for m in _safe_members(tar, archive):
                parts = PurePosixPath(m.name).parts
                # aclImdb/<split>/<label>/<id>_<rating>.txt; the top folder name is not relied on.
                if (m.isfile() and len(parts) == 4 and parts[1] in ("train", "test") and parts[2] in ("pos", "neg")
                        and parts[3].endswith(".txt")):
                    _write_member(tar, m, staging / parts[1] / parts[2] / parts[3])
        for split in ("train", "test"):
            if not (staging / split).is_dir():
                raise FetchError(f"{archive}: no {split}/pos or {split}/neg reviews inside; "
                                 "expected the aclImdb layout")
        shutil.rmtree(folder / "aclImdb", ignore_errors=True)
        os.replace(staging, folder / "aclImdb")  # appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack_multi30k(folder: Path) -> None:
    """training.tar.gz / validation.tar.gz -> train.en, train.de, val.en, val.de."""
    for archive, prefix in (("training.tar.gz", "train"), ("validation.tar.gz", "val")):
        wanted = {f"{prefix}.en", f"{prefix}.de"}
        with _open_tar(folder / archive) as tar:
            for m in _safe_members(tar, folder / archive):
                base = PurePosixPath(m.name).name
                if m.isfile() and base in wanted:
                    _write_member(tar, m, folder / base)
                    wanted.discard(base)
        if wanted:
            raise FetchError(f"{folder / archive}: lacks {', '.join(sorted(wanted))}; expected the Multi30k "
                             f"{prefix} files for English and German")


def _unpack_fsdd(folder: Path) -> None:
    """v1.0.9.tar.gz -> recordings/{digit}_{speaker}_{index}.wav (the repository's code and docs are skipped)."""
    archive = folder / "v1.0.9.tar.gz"
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".recordings."))
    try:
        with _open_tar(archive) as tar:
            for m in _safe_members(tar, archive):
                parts = PurePosixPath(m.name).parts
                # free-spoken-digit-dataset-1.0.9/recordings/<file>.wav; the top folder name is not relied on.
                if m.isfile() and len(parts) == 3 and parts[1] == "recordings" and parts[2].endswith(".wav"):
                    _write_member(tar, m, staging / parts[2])
        if not any(staging.iterdir()):
            raise FetchError(f"{archive}: no recordings/*.wav inside; expected the Free Spoken Digit Dataset layout")
        shutil.rmtree(folder / "recordings", ignore_errors=True)
        os.replace(staging, folder / "recordings")  # appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)


UNPACK = {"imdb": _unpack_imdb, "multi30k": _unpack_multi30k, "fsdd": _unpack_fsdd}
