"""Built-in text corpora that need no download: Python source, date translations, docstrings.

- `pycode`: the Python standard library's own `.py` files (language modelling on code).
- `pydocs`: English prose about Python: the standard library's docstrings and pydoc's reference topics
  (language modelling on prose).
- `dates-en-de`, `dates-en-fr`, `dates-en-zh`: an English date (and sometimes time) and the same
  moment written in German, French or Chinese, rendered by Babel from CLDR data (translation).
- `docstrings`: first paragraphs of the standard library's public docstrings, labelled with their
  top-level package (classification).

All of them read only what ships with Python and Babel, so they are the same on every machine with
the same Python and Babel versions (recorded in each corpus's `source`).
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import hashlib
import os
import random
import re
import sys
import sysconfig
from collections import defaultdict
from pathlib import Path

from genlab.errors import UsageError

PYCODE_MAX_CHARS = 3_000_000   # ~a quarter of the stdlib: minutes of CPU training, seconds to read
PYCODE_MAX_FILE_CHARS = 100_000  # skips generated giants such as pydoc_data/topics.py
PYDOCS_MIN_CHARS = 40          # shorter docstrings ("Return self.") say little
DATE_LANGS = {"de": "German", "fr": "French", "zh": "Chinese"}
DATE_STYLES = ("full", "long", "medium")
DOCSTRING_CLASSES = 10
DOCSTRING_MIN_CHARS = 20
DOCSTRING_MAX_CHARS = 300


# ---------------------------------------------------------------------------------------------
# The standard library's source files

def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's `.py` files in sorted order, without tests and site-packages.

    Test code is skipped: any path part starting with "test" (test/, tests/, test_*.py) or ending in
    "_test"/"_tests" (idlelib/idle_test); so are site-packages, dist-packages and __pycache__.
    """
    root = root or stdlib_root()
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not _is_test(d) and not d.startswith(".")
                   and d not in ("site-packages", "dist-packages", "__pycache__")]
        out += [Path(folder) / f for f in files if f.endswith(".py") and not _is_test(f.removesuffix(".py"))]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _is_test(name: str) -> bool:
    return name.startswith("test") or name.endswith(("_test", "_tests"))


def _read_utf8(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def pycode(max_chars: int = PYCODE_MAX_CHARS, max_file_chars: int = PYCODE_MAX_FILE_CHARS,
           root: Path | None = None) -> tuple[list[str], list[str]]:
    """Stdlib source files as documents: (texts, relative paths), both in sorted path order.

    Files that do not decode as UTF-8 or exceed `max_file_chars` are skipped. Under `max_chars`
    (0 = no cap) the files are taken in the order of a hash of their path until the cap is reached,
    a fixed spread over the whole library (not just its first letters) that no seed changes.
    """
    root = root or stdlib_root()
    files = stdlib_files(root)
    rel = [p.relative_to(root).as_posix() for p in files]
    order = sorted(range(len(files)), key=lambda i: hashlib.sha256(rel[i].encode()).hexdigest())
    chosen, total = {}, 0
    for i in order:
        text = _read_utf8(files[i])
        if text is None or not text.strip() or len(text) > max_file_chars:
            continue
        if max_chars and total + len(text) > max_chars:
            if total:
                continue  # try smaller files that still fit
        chosen[i] = text
        total += len(text)
        if max_chars and total >= max_chars * 0.999:
            break
    keep = sorted(chosen)
    return [chosen[i] for i in keep], [rel[i] for i in keep]


# ---------------------------------------------------------------------------------------------
# English prose: the standard library's documentation

def pydocs(root: Path | None = None) -> tuple[list[str], list[str]]:
    """Documentation prose as documents: (texts, names), in sorted order. ~2.2M characters on Python 3.11.

    One document per stdlib file (tests excluded): its module, class and function docstrings of at least
    PYDOCS_MIN_CHARS characters in source order, cleaned by `ast.get_docstring` and joined by blank lines,
    each docstring only the first time it is seen. Then one document per topic of the language reference that
    `pydoc` ships (`pydoc_data/topics.py`, read with `ast.literal_eval`). Nothing is imported.
    """
    texts, names = _pydocs(str(root or stdlib_root()))
    return list(texts), list(names)


@functools.lru_cache(maxsize=2)
def _pydocs(root: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    root = Path(root)
    seen: set[str] = set()
    texts, names = [], []
    topics = {}
    for path in stdlib_files(root):
        rel = path.relative_to(root).as_posix()
        tree = _parse(path)
        if tree is None:
            continue
        if rel == "pydoc_data/topics.py":
            topics = _topics(tree)
            continue
        docs = []
        for doc in _docstrings_in_order(tree):
            if len(doc) >= PYDOCS_MIN_CHARS and doc not in seen:
                seen.add(doc)
                docs.append(doc)
        if docs:
            texts.append("\n\n".join(docs))
            names.append(rel)
    for name in sorted(topics):
        texts.append(topics[name].strip())
        names.append(f"pydoc_data/topics.py:{name}")
    return tuple(texts), tuple(names)


def _parse(path: Path) -> ast.Module | None:
    text = _read_utf8(path)
    if text is None:
        return None
    try:
        return ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError):
        return None


def _docstrings_in_order(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    doc = ast.get_docstring(node)
    out = [doc] if doc else []
    for child in node.body:
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            out += _docstrings_in_order(child)
    return out


def _topics(tree: ast.Module) -> dict[str, str]:
    """pydoc_data/topics.py's `topics = {...}` literal; {} when it is not there in that form."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "topics" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            if isinstance(value, dict):
                return {str(k): v for k, v in value.items() if isinstance(v, str) and v.strip()}
    return {}


# ---------------------------------------------------------------------------------------------
# Dates: English -> German / French / Chinese, rendered by Babel

def _plain_spaces(s: str) -> str:
    # CLDR puts no-break spaces in times ("2:05\u202fPM"); plain spaces are what people type in prompts.
    return s.replace("\u202f", " ").replace("\u00a0", " ")


def date_pair(moment: dt.datetime, style: str, with_time: bool, lang: str) -> tuple[str, str]:
    """(English, `lang`) renderings of `moment` in Babel's `style` ("full", "long", "medium").

    With `with_time` both sides use `format_datetime` (the time of day in the same style, UTC);
    otherwise `format_date`. No-break spaces become plain spaces.
    """
    from babel.dates import format_date, format_datetime

    if with_time:
        src = format_datetime(moment, style, tzinfo=dt.timezone.utc, locale="en")
        tgt = format_datetime(moment, style, tzinfo=dt.timezone.utc, locale=lang)
    else:
        src = format_date(moment.date(), style, locale="en")
        tgt = format_date(moment.date(), style, locale=lang)
    return _plain_spaces(src), _plain_spaces(tgt)


def dates(lang: str, count: int = 6000, seed: int = 0) -> list[tuple[str, str]]:
    """`count` (English, `lang`) pairs for random moments between 1900 and 2100, seeded by `seed`.

    Styles are mixed evenly over full (with weekday), long and medium; a third of the long and
    medium pairs carry a time of day (full times spell out the zone name, too long to be useful).
    """
    if lang not in DATE_LANGS:
        raise UsageError(f"unknown date language {lang!r}; expected one of {', '.join(DATE_LANGS)}")
    rng = random.Random(seed)  # Python's Mersenne Twister: the same pairs on every platform
    first, last = dt.date(1900, 1, 1).toordinal(), dt.date(2100, 12, 31).toordinal()
    pairs = []
    for _ in range(count):
        day = dt.date.fromordinal(rng.randint(first, last))
        moment = dt.datetime(day.year, day.month, day.day, rng.randrange(24), rng.randrange(60), rng.randrange(60))
        style = rng.choice(DATE_STYLES)
        with_time = style != "full" and rng.random() < 1 / 3
        pairs.append(date_pair(moment, style, with_time, lang))
    return pairs


# ---------------------------------------------------------------------------------------------
# Docstrings labelled by package

def _first_paragraph(doc: str) -> str:
    para = doc.strip().split("\n\n")[0]
    return re.sub(r"\s+", " ", para).strip()[:DOCSTRING_MAX_CHARS].rstrip()


def _public_docstrings(tree: ast.Module) -> list[str]:
    """Docstrings of public module-level functions and classes and of their public methods."""
    out = []

    def visit(body):
        for node in body:
            defines = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if defines and not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                if doc:
                    out.append(doc)
                if isinstance(node, ast.ClassDef):
                    visit(node.body)

    visit(tree.body)
    return out


def docstrings(n_classes: int = DOCSTRING_CLASSES, root: Path | None = None) -> tuple[list[str], list[str]]:
    """(texts, package labels) for the `n_classes` public stdlib packages with the most docstrings.

    Files are parsed with `ast` (nothing is imported). Each docstring's first paragraph, with
    whitespace collapsed and cut to 300 characters, is kept if it has at least 20 characters and was
    not seen before (the first occurrence in sorted file order wins, so duplicates never straddle
    two labels). Private top-level modules (`_pydecimal`) are left out. Sorted by (label, file order).
    """
    texts, labels = _docstrings(n_classes, str(root or stdlib_root()))
    return list(texts), list(labels)


@functools.lru_cache(maxsize=4)
def _docstrings(n_classes: int, root: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # Parsing ~700 files takes seconds; cached because tests and a session may ask more than once.
    root = Path(root)
    seen: set[str] = set()
    by_label: dict[str, list[str]] = defaultdict(list)
    for path in stdlib_files(root):
        top = path.relative_to(root).parts[0].removesuffix(".py")
        if top.startswith("_"):
            continue
        tree = _parse(path)
        if tree is None:
            continue
        for doc in _public_docstrings(tree):
            para = _first_paragraph(doc)
            if len(para) >= DOCSTRING_MIN_CHARS and para not in seen:
                seen.add(para)
                by_label[top].append(para)
    keep = sorted(sorted(by_label, key=lambda k: (-len(by_label[k]), k))[:n_classes])
    texts, labels = [], []
    for label in keep:
        texts += by_label[label]
        labels += [label] * len(by_label[label])
    return tuple(texts), tuple(labels)


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))
