"""Text datasets in memory: corpora for language models, pairs for translation, labelled texts.

`load_text(cfg, task)` reads what `cfg.name` names, for one of three tasks:

    task      returns          built-ins                        paths
    "lm"      TextCorpus       pycode, pydocs, tinyshakespeare* a .txt file, or a folder of .txt files
    "pairs"   ParallelCorpus   dates-en-de/-fr/-zh, multi30k*   a .tsv file: source<TAB>target per line
    "labels"  LabelledText     docstrings, imdb*                a .csv file with columns text,label, or a
                                                                folder of class sub-folders of .txt files
                                                                ({train,test}/<class>/*.txt: test = val)
    * downloaded first with `genlab data fetch <name>` (see genlab.data.fetch)

Train/validation splits are deterministic: by document, pair or example with `cfg.val_fraction`
and `cfg.seed`, except where the data brings its own (imdb test, multi30k val) and for a corpus
that is one document (a single .txt, tinyshakespeare), whose last `val_fraction` of the text (cut at
a line break) is held out, as nanoGPT does. Bad input raises DataError naming the file (and line
or byte) and what was expected.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch

from genlab.data.corpora import dates, docstrings, pycode, pydocs, python_version, stdlib_root
from genlab.data.fetch import dataset_dir, is_fetched
from genlab.data.tokenizers import KINDS, Tokenizer, train_tokenizer
from genlab.errors import DataError

if TYPE_CHECKING:
    from genlab.config import DataConfig

TASKS = {
    "lm": "language modelling (gpt, lstm)",
    "pairs": "translation pairs (seq2seq)",
    "labels": "text classification (textclf)",
}
# What each task accepts as a path, for error messages.
PATH_KINDS = {
    "lm": "a .txt file or a folder of .txt files",
    "pairs": "a .tsv file with one source<TAB>target pair per line",
    "labels": "a .csv file with header columns text,label, or a folder with one sub-folder of .txt files per "
              "class (aclImdb layout {train,test}/{pos,neg}/*.txt, where test becomes validation)",
}
# Built-in name -> (task, description).
TEXT_BUILTINS = {
    "pycode": ("lm", "the Python standard library's own .py files, ~3M characters, tests excluded; no download"),
    "pydocs": ("lm", "English prose: the standard library's docstrings and pydoc's reference topics, ~2.2M "
                     "characters; no download"),
    "tinyshakespeare": ("lm", "Karpathy's tiny Shakespeare, 1.1M characters (genlab data fetch tinyshakespeare)"),
    "dates-en-de": ("pairs", "English dates and times -> German, rendered by Babel (data.count pairs, seeded)"),
    "dates-en-fr": ("pairs", "English dates and times -> French, rendered by Babel (data.count pairs, seeded)"),
    "dates-en-zh": ("pairs", "English dates and times -> Chinese, rendered by Babel (data.count pairs, seeded)"),
    "multi30k": ("pairs", "Multi30k image captions, English -> German, 29000 + 1014 pairs "
                          "(genlab data fetch multi30k)"),
    "docstrings": ("labels", "stdlib docstrings labelled by package: 10 classes, ~2700 examples; no download"),
    "imdb": ("labels", "IMDB movie reviews, pos/neg, 25000 + 25000 (genlab data fetch imdb)"),
}


@dataclass
class TextCorpus:
    """Documents for language modelling; the loader joins them with <eos>."""
    train: list[str]
    val: list[str]
    name: str = ""
    source: str = ""

    task = "lm"

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "task": self.task,
                "train_documents": len(self.train), "val_documents": len(self.val),
                "train_chars": sum(map(len, self.train)), "val_chars": sum(map(len, self.val))}


@dataclass
class ParallelCorpus:
    """(source, target) pairs for translation."""
    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    name: str = ""
    source: str = ""

    task = "pairs"

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "task": self.task,
                "train_pairs": len(self.train), "val_pairs": len(self.val)}


@dataclass
class LabelledText:
    """Texts with integer labels (index into `classes`)."""
    train_texts: list[str]
    train_labels: list[int]
    val_texts: list[str]
    val_labels: list[int]
    classes: list[str]
    name: str = ""
    source: str = ""

    task = "labels"

    def __post_init__(self):
        for part, texts, labels in (("train", self.train_texts, self.train_labels),
                                    ("val", self.val_texts, self.val_labels)):
            if len(texts) != len(labels):
                raise DataError(f"{self.name}: {len(labels)} {part} labels for {len(texts)} texts; expected one each")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        counts = [0] * len(self.classes)
        for y in self.train_labels:
            counts[y] += 1
        return {"name": self.name, "source": self.source, "task": self.task, "classes": list(self.classes),
                "train_examples": len(self.train_texts), "val_examples": len(self.val_texts),
                "train_per_class": dict(zip(self.classes, counts))}


TextData = Union[TextCorpus, ParallelCorpus, LabelledText]


def load_text(cfg: DataConfig, task: str) -> TextData:
    """Load the text data `cfg.name` names for `task` ("lm", "pairs" or "labels"); see the module docstring."""
    if task not in TASKS:
        raise DataError(f"unknown text task {task!r}; expected one of {', '.join(TASKS)}")
    if cfg.name in TEXT_BUILTINS:
        gives = TEXT_BUILTINS[cfg.name][0]
        if gives != task:
            raise DataError(f"{cfg.name} is a built-in for {TASKS[gives]}, not {TASKS[task]}; use "
                            f"{_builtins_for(task)} or {PATH_KINDS[task]}")
        return _load_builtin(cfg)
    path = Path(cfg.name).expanduser()
    if not cfg.name or not path.exists():
        raise DataError(f"unknown text dataset {cfg.name!r}: not a built-in name and no such path. For "
                        f"{TASKS[task]} use {_builtins_for(task)} or {PATH_KINDS[task]}")
    return _load_path(path, task, cfg)


def training_texts(data: TextData) -> list[str]:
    """The texts a tokenizer should learn from: training documents, both sides of training pairs, or
    training examples (never validation text, so validation measures what a model has not seen)."""
    if isinstance(data, TextCorpus):
        return list(data.train)
    if isinstance(data, ParallelCorpus):
        return [s for pair in data.train for s in pair]
    return list(data.train_texts)


def tokenizer_for(data: TextData, cfg: DataConfig) -> Tokenizer:
    """Train the tokenizer `cfg.tokenizer` ("char" or "bpe", with `cfg.vocab_size`) on the training texts."""
    if cfg.tokenizer not in KINDS:
        raise DataError(f"data.tokenizer={cfg.tokenizer!r}; expected one of {', '.join(KINDS)}")
    try:
        return train_tokenizer(cfg.tokenizer, training_texts(data), cfg.vocab_size)
    except ValueError as e:
        raise DataError(f"{data.name}: data.tokenizer={cfg.tokenizer}: {e}") from e


def _builtins_for(task: str) -> str:
    return "a built-in (" + ", ".join(n for n, (t, _) in TEXT_BUILTINS.items() if t == task) + ")"


def _load_path(path: Path, task: str, cfg: DataConfig) -> TextData:
    suffix = path.suffix.lower()
    gives = ("lm" if suffix == ".txt" else "pairs" if suffix == ".tsv" else "labels" if suffix == ".csv"
             else None) if path.is_file() else None
    if path.is_file() and gives is None:
        raise DataError(f"{path}: unsupported file type {suffix or '(no suffix)'!r}; for {TASKS[task]} "
                        f"expected {PATH_KINDS[task]}")
    if gives is not None and gives != task:
        raise DataError(f"{path}: a {suffix} file holds data for {TASKS[gives]} ({PATH_KINDS[gives]}), but this "
                        f"run needs {TASKS[task]}: {PATH_KINDS[task]}")
    if task == "lm":
        docs = _nonempty([read_utf8(path)], str(path), "line") if path.is_file() else read_txt_folder(path)
        train, val = split_documents(docs, cfg.val_fraction, cfg.seed, str(path))
        return TextCorpus(train, val, str(path), str(path.resolve()))
    if task == "pairs":
        if path.is_dir():
            raise DataError(f"{path}: a folder cannot give {TASKS['pairs']}; expected {PATH_KINDS['pairs']}")
        train, val = split_items(read_tsv(path), cfg.val_fraction, cfg.seed, str(path))
        return ParallelCorpus(train, val, str(path), str(path.resolve()))
    if path.is_dir():
        return read_labelled_folder(path, cfg.val_fraction, cfg.seed)
    texts, labels = read_csv(path)
    return labelled(texts, labels, cfg.val_fraction, cfg.seed, str(path), str(path.resolve()))


# ---------------------------------------------------------------------------------------------
# Splits

def split_items(items: list, val_fraction: float, seed: int, where: str) -> tuple[list, list]:
    """Seeded split by item (document, pair, example), keeping the original order inside each part."""
    if not 0 < val_fraction < 1:
        raise DataError(f"data.val_fraction={val_fraction}; expected a fraction between 0 and 1")
    n = len(items)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise DataError(f"{where}: {n} item(s) are too few to hold out {val_fraction:.0%} for validation; "
                        "add data or lower data.val_fraction")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val_idx = set(perm[:n_val])
    return [x for i, x in enumerate(items) if i not in val_idx], [x for i, x in enumerate(items) if i in val_idx]


def split_documents(docs: list[str], val_fraction: float, seed: int, where: str) -> tuple[list[str], list[str]]:
    """By document when there are several; one document is cut, holding out its last `val_fraction`."""
    if len(docs) >= 2:
        return split_items(docs, val_fraction, seed, where)
    if not 0 < val_fraction < 1:
        raise DataError(f"data.val_fraction={val_fraction}; expected a fraction between 0 and 1")
    text = docs[0]
    cut = int(len(text) * (1 - val_fraction))
    nl = text.find("\n", cut)
    cut = nl + 1 if 0 <= nl < len(text) - 1 else cut  # end train at a line break where one follows
    if cut <= 0 or cut >= len(text):
        raise DataError(f"{where}: {len(text)} characters are too few to hold out {val_fraction:.0%} for validation")
    return [text[:cut]], [text[cut:]]


def labelled(texts: list[str], labels: list[str], val_fraction: float, seed: int, name: str, source: str,
             classes: list[str] | None = None) -> LabelledText:
    """Texts with string labels -> LabelledText with a seeded split; classes sorted (numerically if all integers)."""
    classes = classes or _sorted_classes(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    pairs = list(zip(texts, (index[y] for y in labels)))
    train, val = split_items(pairs, val_fraction, seed, name)
    return LabelledText([t for t, _ in train], [y for _, y in train], [t for t, _ in val], [y for _, y in val],
                        classes, name, source)


def _sorted_classes(names: set[str]) -> list[str]:
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


# ---------------------------------------------------------------------------------------------
# Readers

def read_utf8(path: Path) -> str:
    """A file's text; not UTF-8 is a DataError naming the file and the first bad byte's offset."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text: byte offset {e.start} (0x{data[e.start]:02x}): {e.reason}; "
                        "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from e
    return text.removeprefix("\ufeff")  # a byte-order mark is not content


def _nonempty(texts: list[str], where: str, what: str) -> list[str]:
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError(f"{where}: empty corpus: no {what} with any text in it")
    return texts


def read_txt_folder(folder: Path) -> list[str]:
    """Every .txt file under `folder` (recursively, hidden files skipped), one document each, in sorted order."""
    files = sorted(f for f in folder.rglob("*.txt") if f.is_file()
                   and not any(p.startswith(".") for p in f.relative_to(folder).parts))
    if not files:
        raise DataError(f"{folder}: empty corpus: no .txt files in this folder; expected {PATH_KINDS['lm']}")
    return _nonempty([read_utf8(f) for f in files], str(folder), ".txt file")


def read_tsv(path: Path) -> list[tuple[str, str]]:
    """source<TAB>target per line (further columns, such as attributions, are ignored; blank lines skipped)."""
    pairs = []
    for lineno, line in enumerate(read_utf8(path).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}:{lineno}: no tab in this line ({line[:60]!r}); expected source<TAB>target")
        src, tgt = line.split("\t")[:2]
        if not src.strip() or not tgt.strip():
            raise DataError(f"{path}:{lineno}: empty {'source' if not src.strip() else 'target'}; "
                            "expected text on both sides of the tab")
        pairs.append((src, tgt))
    if not pairs:
        raise DataError(f"{path}: empty corpus: no source<TAB>target lines")
    return pairs


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    """(texts, labels) from a CSV file whose header names a `text` and a `label` column (any case)."""
    reader = csv.reader(io.StringIO(read_utf8(path), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty corpus: the file is empty; expected a header row with columns text,label")
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV: {e}") from e
    cols = [h.strip().lower() for h in header]
    missing = [c for c in ("text", "label") if c not in cols]
    if missing:
        found = ", ".join(repr(h) for h in header) or "(none)"
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found columns: {found}. "
                        "Expected a header row with columns text,label")
    ti, li = cols.index("text"), cols.index("label")
    texts, labels = [], []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(ti, li):
                raise DataError(f"{path}:{reader.line_num}: {len(row)} field(s); "
                                f"expected {len(header)} as in the header")
            text, label = row[ti], row[li].strip()
            if not label:
                raise DataError(f"{path}:{reader.line_num}: empty label; expected a class name or number")
            if text.strip():
                texts.append(text)
                labels.append(label)
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV: {e}") from e
    if not texts:
        raise DataError(f"{path}: empty corpus: no rows with text")
    if len(set(labels)) < 2:
        raise DataError(f"{path}: only one label ({labels[0]!r}); classification needs at least two classes")
    return texts, labels


def _class_folders(folder: Path, clean=None) -> dict[str, list[str]]:
    """Class name -> texts of the .txt files directly inside each sub-folder (aclImdb's `unsup` is skipped)."""
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub.name == "unsup":
            continue
        files = sorted(f for f in sub.glob("*.txt") if f.is_file() and not f.name.startswith("."))
        texts = [t for t in (read_utf8(f) for f in files) if t.strip()]
        if texts:
            out[sub.name] = [clean(t) for t in texts] if clean else texts
    return out


def read_labelled_folder(folder: Path, val_fraction: float, seed: int, name: str | None = None,
                         clean=None) -> LabelledText:
    """A folder of class sub-folders of .txt files, or {train,test}/<class>/*.txt (test becomes validation).

    An `aclImdb` folder inside `folder` is looked into. Without a test part the split is seeded.
    """
    root = folder / "aclImdb" if (folder / "aclImdb").is_dir() and not (folder / "train").is_dir() else folder
    name = name or str(folder)
    if (root / "train").is_dir():
        train = _class_folders(root / "train", clean)
        test = _class_folders(root / "test", clean) if (root / "test").is_dir() else None
    else:
        train, test = _class_folders(root, clean), None
    if len(train) < 2:
        raise DataError(f"{root}: found {len(train)} class folder(s) with .txt files; expected "
                        f"{PATH_KINDS['labels']} with at least two classes")
    classes = _sorted_classes(set(train))
    texts = [t for c in classes for t in train[c]]
    labels = [c for c in classes for _ in train[c]]
    if test is None:
        return labelled(texts, labels, val_fraction, seed, name, str(root.resolve()), classes)
    extra = sorted(set(test) - set(train))
    if extra:
        raise DataError(f"{root / 'test'}: classes {extra} do not appear in {root / 'train'} ({', '.join(classes)})")
    index = {c: i for i, c in enumerate(classes)}
    val_texts = [t for c in classes for t in test.get(c, [])]
    val_labels = [index[c] for c in classes for _ in test.get(c, [])]
    if not val_texts:
        raise DataError(f"{root / 'test'}: no .txt files in its class folders")
    return LabelledText(texts, [index[c] for c in labels], val_texts, val_labels, classes, name, str(root.resolve()))


# ---------------------------------------------------------------------------------------------
# Built-ins

def _load_builtin(cfg: DataConfig) -> TextData:
    name = cfg.name
    if name == "pycode":
        docs, paths = pycode()
        train, val = split_items(docs, cfg.val_fraction, cfg.seed, name)
        return TextCorpus(train, val, name, f"Python {python_version()} standard library, {len(docs)} files, "
                          f"{sum(map(len, docs))} characters ({stdlib_root()})")
    if name == "pydocs":
        docs, _ = pydocs()
        train, val = split_items(docs, cfg.val_fraction, cfg.seed, name)
        return TextCorpus(train, val, name, f"Python {python_version()} standard library docstrings and pydoc "
                          f"topics, {len(docs)} documents, {sum(map(len, docs))} characters ({stdlib_root()})")
    if name.startswith("dates-en-"):
        if cfg.count < 2:
            raise DataError(f"data.count={cfg.count}; expected at least 2 date pairs (one for validation)")
        import babel

        pairs = dates(name.removeprefix("dates-en-"), cfg.count, cfg.seed)
        train, val = split_items(pairs, cfg.val_fraction, cfg.seed, name)
        return ParallelCorpus(train, val, name,
                              f"Babel {babel.__version__} CLDR dates, {cfg.count} pairs, seed {cfg.seed}")
    if name == "docstrings":
        texts, labels = docstrings()
        return labelled(texts, labels, cfg.val_fraction, cfg.seed, name,
                        f"Python {python_version()} standard library docstrings ({stdlib_root()})")
    folder = _fetched(name)
    if name == "tinyshakespeare":
        train, val = split_documents([read_utf8(folder / "input.txt")], cfg.val_fraction, cfg.seed, name)
        return TextCorpus(train, val, name, str(folder))
    if name == "imdb":
        return read_labelled_folder(folder / "aclImdb", cfg.val_fraction, cfg.seed, name, clean=_imdb_clean)
    # multi30k: English -> German, the official train and validation splits
    train = _parallel_files(folder / "train.en", folder / "train.de")
    val = _parallel_files(folder / "val.en", folder / "val.de")
    return ParallelCorpus(train, val, name, str(folder))


def _fetched(name: str) -> Path:
    folder = dataset_dir(name)
    if not is_fetched(name):
        raise DataError(f"{name} is not downloaded yet (looked in {folder}); run `genlab data fetch {name}` "
                        "first, or set GENLAB_CACHE to the cache that holds it")
    return folder


def _imdb_clean(text: str) -> str:
    return text.replace("<br /><br />", "\n").replace("<br />", "\n").strip()


def _parallel_files(src: Path, tgt: Path) -> list[tuple[str, str]]:
    """Line-aligned files -> pairs; lines empty on both sides (a trailing newline) are dropped."""
    a = read_utf8(src).rstrip("\n").split("\n")
    b = read_utf8(tgt).rstrip("\n").split("\n")
    if len(a) != len(b):
        raise DataError(f"{src} has {len(a)} lines but {tgt} has {len(b)}; expected line-aligned translations")
    pairs = [(x.rstrip("\r"), y.rstrip("\r")) for x, y in zip(a, b)]
    pairs = [(x, y) for x, y in pairs if x.strip() and y.strip()]
    if not pairs:
        raise DataError(f"{src}: empty corpus: no line pairs with text on both sides")
    return pairs
