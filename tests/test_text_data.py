"""Text data: built-in corpora, readers and their errors, deterministic splits, batches, and text downloads."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
from collections import Counter

import pytest
import torch
from babel.dates import format_date, format_datetime

from genlab.config import DataConfig
from genlab.data import corpora
from genlab.data.fetch import CHECKSUMS, FetchError, fetch, is_fetched
from genlab.data.text import LabelledText, ParallelCorpus, TextCorpus, load_text, tokenizer_for, training_texts
from genlab.data.text_loader import (LabelBatches, LMStream, PairBatches, encode_corpus, encode_texts, eval_labels,
                                     eval_lm, eval_pairs)
from genlab.data.tokenizers import BOS, EOS, PAD, tokenizer_from_json, train_tokenizer
from genlab.errors import DataError, UsageError


# ---------------------------------------------------------------------------------------------
# Built-in corpora

def test_stdlib_files_skip_tests_site_packages_and_non_utf8(tmp_path):
    for rel in ["os.py", "json/__init__.py", "json/decoder.py", "test/test_os.py", "test/support/helper.py",
                "unittest/tests/test_case.py", "idlelib/idle_test/htest.py", "idlelib/editor.py",
                "lib2to3/tests/data/x.py", "test_something.py", "site-packages/numpy/core.py",
                "__pycache__/os.cpython-311.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\nx = 1\n")
    (tmp_path / "latin.py").write_bytes(b"# caf\xe9\n")
    rel = [p.relative_to(tmp_path).as_posix() for p in corpora.stdlib_files(tmp_path)]
    assert rel == ["idlelib/editor.py", "json/__init__.py", "json/decoder.py", "latin.py", "os.py"]
    texts, paths = corpora.pycode(max_chars=0, root=tmp_path)
    assert paths == ["idlelib/editor.py", "json/__init__.py", "json/decoder.py", "os.py"]  # latin.py is not UTF-8
    assert texts[-1] == "# os.py\nx = 1\n"


def test_pycode_is_the_real_stdlib_capped_and_deterministic():
    texts, paths = corpora.pycode()
    assert (texts, paths) == corpora.pycode()
    assert paths == sorted(paths) and len(paths) > 100
    assert not [p for p in paths if any(part.startswith("test") for part in p.split("/"))
                or "idle_test" in p or "site-packages" in p]
    assert 2_500_000 < sum(map(len, texts)) <= corpora.PYCODE_MAX_CHARS
    assert any("def " in t for t in texts)
    small, small_paths = corpora.pycode(max_chars=50_000)
    assert sum(map(len, small)) <= 50_000 and set(small_paths) < set(corpora.pycode(max_chars=0)[1])


def test_pycode_split_is_by_file_and_seeded():
    a = load_text(DataConfig(name="pycode", seed=1), "lm")
    b = load_text(DataConfig(name="pycode", seed=1), "lm")
    c = load_text(DataConfig(name="pycode", seed=2), "lm")
    assert isinstance(a, TextCorpus) and a.train == b.train and a.val == b.val
    assert a.val != c.val
    texts, _ = corpora.pycode()
    assert sorted(a.train + a.val) == sorted(texts) and not set(a.train) & set(a.val)
    assert len(a.val) == round(len(texts) * 0.1)


def test_pydocs_is_documentation_prose_from_docstrings_and_the_pydoc_topics(tmp_path):
    texts, names = corpora.pydocs()
    assert len(texts) == len(names) == len(set(names)) and sum(map(len, texts)) > 1_000_000
    topics = [t for t, n in zip(texts, names) if n.startswith("pydoc_data/topics.py:")]
    assert len(topics) > 50 and any("assert" in t and "statement" in t for t in topics)
    assert "pydoc_data/topics.py" not in names                       # the topics file itself is not a document
    words = re.findall(r"[A-Za-z]+", " ".join(texts[:50]))
    assert sum(w.lower() in {"the", "a", "of", "is", "to"} for w in words) > 0.05 * len(words)   # English prose
    assert not any(t.lstrip().startswith(("import ", "def ", "class ")) for t in texts)          # not code
    # a docstring is kept once, in the order its file defines it
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "a.py").write_text('"""Module a explains what this module is for."""\n'
                               'def f():\n    """The function f computes nothing at all, at length."""\n'
                               'class C:\n    """A class C that keeps its docstring in the corpus."""\n'
                               '    def m(self):\n        """Short."""\n')
    (root / "pkg" / "b.py").write_text('"""Module a explains what this module is for."""\nx = 1\n')
    (root / "test_c.py").write_text('"""A test module that the corpus leaves out, like pycode does."""\n')
    doc, name = corpora.pydocs(root)
    assert name == ["a.py"] and doc == ["Module a explains what this module is for.\n\nThe function f computes "
                                        "nothing at all, at length.\n\nA class C that keeps its docstring in the "
                                        "corpus."]
    data = load_text(DataConfig(name="pydocs"), "lm")
    assert isinstance(data, TextCorpus) and sorted(data.train + data.val) == sorted(texts)


def test_dates_match_babel_for_a_fixed_moment():
    moment = dt.datetime(2026, 3, 3, 14, 5, 9)
    assert corpora.date_pair(moment, "full", False, "de") == ("Tuesday, March 3, 2026", "Dienstag, 3. März 2026")
    for lang in ("de", "fr", "zh"):
        for style in ("full", "long", "medium"):
            assert corpora.date_pair(moment, style, False, lang) == (
                format_date(moment.date(), style, locale="en"), format_date(moment.date(), style, locale=lang))
        src, tgt = corpora.date_pair(moment, "medium", True, lang)
        assert src == format_datetime(moment, "medium", locale="en").replace("\u202f", " ") == "Mar 3, 2026, 2:05:09 PM"
        assert tgt == format_datetime(moment, "medium", locale=lang).replace("\u202f", " ").replace("\xa0", " ")
    assert corpora.date_pair(moment, "full", False, "zh")[1] == "2026年3月3日星期二"


def test_dates_are_seeded_varied_and_consistent():
    a, b, c = corpora.dates("fr", 300, seed=5), corpora.dates("fr", 300, seed=5), corpora.dates("fr", 300, seed=6)
    assert a == b and a != c and len(a) == 300
    assert len(set(a)) > 295
    for src, tgt in a:  # the same year on both sides, inside 1900-2100
        years = re.findall(r"\b(1[89]\d\d|20\d\d|2100)\b", src)
        assert years and all(1900 <= int(y) <= 2100 for y in years) and years[-1] in tgt
    styles = Counter("day" in s.split(",")[0] for s, _ in a)  # full style starts with a weekday
    assert 60 < styles[True] < 140
    assert sum(":" in s for s, _ in a) > 30  # some carry a time
    data = load_text(DataConfig(name="dates-en-zh", count=200, seed=3, val_fraction=0.25), "pairs")
    assert isinstance(data, ParallelCorpus) and (len(data.train), len(data.val)) == (150, 50)
    assert sorted(data.train + data.val) == sorted(corpora.dates("zh", 200, seed=3))


def test_docstrings_has_ten_classes_of_clean_unique_texts():
    texts, labels = corpora.docstrings()
    assert (texts, labels) == corpora.docstrings()
    counts = Counter(labels)
    assert len(counts) == 10 and min(counts.values()) >= 50
    assert all(not c.startswith("_") for c in counts)
    assert len(set(texts)) == len(texts)
    assert all(20 <= len(t) <= 300 and "\n" not in t for t in texts)
    data = load_text(DataConfig(name="docstrings"), "labels")
    assert isinstance(data, LabelledText) and data.classes == sorted(counts) and data.num_classes == 10
    assert len(data.train_texts) + len(data.val_texts) == len(texts)
    assert Counter(data.classes[y] for y in data.train_labels + data.val_labels) == counts


# ---------------------------------------------------------------------------------------------
# Readers and their errors

def test_non_utf8_file_error_names_file_and_byte_offset(tmp_path):
    (tmp_path / "ok.txt").write_text("fine text\n")
    (tmp_path / "bad.txt").write_bytes("héllo".encode() + b" caf\xe9 au lait")
    with pytest.raises(DataError, match=r"bad\.txt: not UTF-8 text: byte offset 10 \(0xe9\)"):
        load_text(DataConfig(name=str(tmp_path)), "lm")


def test_tsv_reader_and_line_numbered_errors(tmp_path):
    good = tmp_path / "pairs.tsv"
    good.write_text("".join(f"one {i}\teins {i}\tCC-BY attribution\n" for i in range(20)) + "\n")
    data = load_text(DataConfig(name=str(good), val_fraction=0.2), "pairs")
    assert len(data.train) == 16 and len(data.val) == 4 and ("one 3", "eins 3") in data.train + data.val
    bad = tmp_path / "bad.tsv"
    bad.write_text("hello\thallo\r\nworld\thallo welt\r\n\r\nno tab here\r\n")
    with pytest.raises(DataError, match=r"bad\.tsv:4: no tab in this line \('no tab here'\); expected source<TAB>target"):
        load_text(DataConfig(name=str(bad)), "pairs")
    (tmp_path / "empty_side.tsv").write_text("a\tb\n\tb\n")
    with pytest.raises(DataError, match=r"empty_side\.tsv:2: empty source"):
        load_text(DataConfig(name=str(tmp_path / "empty_side.tsv")), "pairs")


def test_csv_reader_classes_and_missing_column(tmp_path):
    good = tmp_path / "reviews.csv"
    rows = [f'"review {i}, with a comma",{i % 3}' for i in range(30)]
    good.write_text("Text,Label\n" + "\n".join(rows) + "\n")
    data = load_text(DataConfig(name=str(good)), "labels")
    assert data.classes == ["0", "1", "2"] and len(data.train_texts) == 27 and len(data.val_texts) == 3
    assert "review 4, with a comma" in data.train_texts + data.val_texts
    bad = tmp_path / "bad.csv"
    bad.write_text("review,sentiment\ngreat,pos\n")
    with pytest.raises(DataError) as err:
        load_text(DataConfig(name=str(bad)), "labels")
    msg = str(err.value)
    assert "bad.csv: missing column(s) text, label" in msg and "'review', 'sentiment'" in msg


def test_task_mismatch_and_empty_corpus_are_clear_errors(tmp_path):
    (tmp_path / "story.txt").write_text("once upon a time\n")
    with pytest.raises(DataError, match=r"story\.txt: a \.txt file holds data for language modelling .* needs "
                                        r"translation pairs \(seq2seq\): a \.tsv file"):
        load_text(DataConfig(name=str(tmp_path / "story.txt")), "pairs")
    with pytest.raises(DataError, match="dates-en-de is a built-in for translation pairs"):
        load_text(DataConfig(name="dates-en-de"), "lm")
    with pytest.raises(DataError, match="unknown text dataset 'nope': .*pycode, pydocs, tinyshakespeare"):
        load_text(DataConfig(name="nope"), "lm")
    with pytest.raises(DataError, match="unknown text task 'chat'"):
        load_text(DataConfig(name="pycode"), "chat")
    (tmp_path / "blank.txt").write_text("  \n\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("  \n\n")
    with pytest.raises(DataError, match="empty corpus"):
        load_text(DataConfig(name=str(empty)), "lm")
    with pytest.raises(DataError, match=r"blank\.txt: empty corpus: no line with any text"):
        load_text(DataConfig(name=str(tmp_path / "blank.txt")), "lm")  # one file, whitespace only
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match=r"unsupported file type '\.json'"):
        load_text(DataConfig(name=str(tmp_path / "x.json")), "lm")


@pytest.mark.parametrize("spec,field", [({"type": "char"}, "chars"), ({"type": "char", "chars": [1, 2]}, "chars"),
                                        ({"type": "bpe"}, "tokenizer"), ({"type": "bpe", "tokenizer": 5}, "tokenizer"),
                                        ({"type": "bpe", "tokenizer": "junk"}, "tokenizer")])
def test_damaged_tokenizer_json_is_a_usage_error(spec, field):
    with pytest.raises(UsageError, match=f"tokenizer JSON `{field}`"):
        tokenizer_from_json(json.dumps(spec))


def test_single_text_file_holds_out_its_tail_at_a_line_break(tmp_path):
    text = "".join(f"line {i:03d}\n" for i in range(100))
    (tmp_path / "one.txt").write_text(text)
    data = load_text(DataConfig(name=str(tmp_path / "one.txt"), val_fraction=0.1), "lm")
    assert data.train[0] + data.val[0] == text
    assert data.train[0].endswith("\n") and data.val[0].startswith("line 09")
    assert abs(len(data.val[0]) - len(text) * 0.1) <= 9


def test_folder_splits_are_deterministic_by_document(tmp_path):
    for i in range(40):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"document {i}\n")
    split = lambda seed: load_text(DataConfig(name=str(tmp_path), seed=seed, val_fraction=0.25), "lm")
    a, b, c = split(0), split(0), split(1)
    assert (a.train, a.val) == (b.train, b.val) and a.val != c.val
    assert len(a.val) == 10 and sorted(a.train + a.val) == sorted(f"document {i}\n" for i in range(40))


def write_acl_imdb(root, n=6):
    """A tiny aclImdb tree: {train,test}/{pos,neg}/<id>_<stars>.txt plus the unlabelled `unsup` folder."""
    for split in ("train", "test"):
        for label in ("pos", "neg", "unsup"):
            if split == "test" and label == "unsup":
                continue
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                (root / split / label / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(
                    f"{split} {label} review {i}.<br /><br />Second line.")
    (root / "README").write_text("Large Movie Review Dataset v1.0\n")


def test_acl_imdb_folder_uses_test_as_validation(tmp_path):
    write_acl_imdb(tmp_path / "aclImdb")
    data = load_text(DataConfig(name=str(tmp_path)), "labels")
    assert data.classes == ["neg", "pos"]
    assert len(data.train_texts) == 12 and len(data.val_texts) == 12
    assert data.train_texts[data.train_labels.index(1)].startswith("train pos review")
    assert all(t.startswith("test ") for t in data.val_texts)
    with pytest.raises(DataError, match="a folder cannot give translation pairs"):
        load_text(DataConfig(name=str(tmp_path)), "pairs")


# ---------------------------------------------------------------------------------------------
# Batches

def test_encode_corpus_joins_documents_with_eos():
    docs = ["ab", "", "ba\n"]
    for tok in (train_tokenizer("char", docs), train_tokenizer("bpe", docs * 5, 270)):
        ids = encode_corpus(docs, tok)
        assert ids.dtype == torch.long and ids.ndim == 1
        pieces = [tok.decode(p) for p in torch.tensor_split(ids, (ids == EOS).nonzero().flatten() + 1)[:-1]]
        assert pieces == docs and (ids == EOS).sum() == 3 and ids[-1] == EOS


def test_lm_windows_are_deterministic_contiguous_and_disjoint_across_ranks():
    stream = torch.arange(5000)
    T, B = 32, 4
    make = lambda rank, world=2, seed=7: LMStream(stream, T, B, seed, rank=rank, world=world)
    r0, r0b, r1 = make(0), make(0), make(1)
    per_epoch = r0.per_epoch
    seen = []
    for i in [0, 1, per_epoch - 1, per_epoch, 3 * per_epoch + 2]:
        a, b = r0.batch(i)["ids"], r1.batch(i)["ids"]
        assert a.shape == (B, T + 1) and a.dtype == torch.long
        assert torch.equal(a, r0b.batch(i)["ids"])  # a pure function of (seed, i, rank)
        assert torch.equal(a - a[:, :1], torch.arange(T + 1).expand(B, -1))  # contiguous windows
        assert not set(a[:, 0].tolist()) & set(b[:, 0].tolist())
    # One epoch deals every window once across both ranks; the next epoch cuts at another phase.
    starts = [s for i in range(per_epoch) for r in (r0, r1) for s in r.batch(i)["ids"][:, 0].tolist()]
    assert len(starts) == len(set(starts)) == per_epoch * B * 2
    assert len({s % T for s in starts}) == 1  # one phase per epoch ...
    phases = {r0.batch(e * per_epoch)["ids"][0, 0].item() % T for e in range(6)}
    assert len(phases) > 1  # ... and another in other epochs
    assert not torch.equal(make(0, seed=8).batch(0)["ids"], r0.batch(0)["ids"])
    with pytest.raises(DataError, match="too few for one batch"):
        LMStream(torch.arange(100), 32, 4, 0)


def test_eval_lm_covers_the_stream_in_fixed_windows():
    stream = torch.arange(1000)
    batches = list(eval_lm(stream, 64, 5))
    rows = torch.cat([b["ids"] for b in batches])
    assert rows.shape == ((1000 - 1) // 64, 65) and torch.equal(rows[:, 0], torch.arange(0, 64 * len(rows), 64))
    assert [b["ids"].shape for b in eval_lm(torch.arange(10), 64, 5)] == [(1, 10)]
    assert len(list(eval_lm(stream, 64, 5, limit=7))) == 2


def test_pair_batches_wrap_pad_truncate_and_split_ranks():
    src = [[10 + i] * (1 + i % 5) for i in range(40)]
    tgt = [[50 + i] * (1 + i % 7) for i in range(40)]
    make = lambda rank: PairBatches(src, tgt, 4, seed=3, rank=rank, world=2, max_len=6)
    r0, r1 = make(0), make(1)
    assert r0.per_epoch == 5
    firsts = []
    for i in range(r0.per_epoch):
        b0, b1 = r0.batch(i), r1.batch(i)
        assert torch.equal(b0["src"], make(0).batch(i)["src"]) and torch.equal(b0["tgt"], make(0).batch(i)["tgt"])
        for batch in (b0, b1):
            assert batch["src"].shape[1] <= 6 and batch["tgt"].shape[1] <= 6
            for s, t in zip(batch["src"].tolist(), batch["tgt"].tolist()):
                k = s[0] - 10
                s, t = [x for x in s if x != PAD], [x for x in t if x != PAD]
                assert s == src[k][:5] + [EOS]
                assert t == [BOS] + tgt[k][:4] + [EOS]
                firsts.append(k)
    assert sorted(firsts) == list(range(40))  # the epoch visits every pair once over both ranks
    batches = list(eval_pairs(src, tgt, 16, max_len=6))
    assert [b["src"].shape[0] for b in batches] == [16, 16, 8]
    assert batches[0]["tgt"][1].tolist()[:3] == [BOS, 51, 51]


def test_label_batches_are_padded_seeded_and_disjoint():
    ids = [[100 + i] + list(range(4, 4 + i % 9)) for i in range(30)] + [[]]  # the first id names the example
    labels = [i % 3 for i in range(31)]
    make = lambda rank, seed=0: LabelBatches(ids, labels, 5, seed, rank=rank, world=3, max_len=6)
    r = [make(k) for k in range(3)]
    assert r[0].per_epoch == 2  # 31 // (5 x 3): the ragged end is dropped
    got = [r[k].batch(i) for i in range(r[0].per_epoch) for k in range(3)]
    assert all(b["ids"].shape[0] == 5 and b["ids"].shape[1] <= 6 for b in got)
    seen = []
    for b in got:
        for row, y in zip(b["ids"].tolist(), b["y"].tolist()):
            k = row[0] - 100 if row[0] != EOS else 30  # the empty text became a single <eos>
            assert row[:len(ids[k][:6]) or 1] == (ids[k][:6] or [EOS]) and y == labels[k]
            assert all(x == PAD for x in row[len(ids[k][:6]) or 1:])
            seen.append(k)
    assert len(seen) == len(set(seen)) == 30
    assert torch.equal(make(1).batch(4)["ids"], r[1].batch(4)["ids"])
    assert not torch.equal(make(1, seed=9).batch(0)["ids"], r[1].batch(0)["ids"])
    ev = list(eval_labels(ids, labels, 8, max_len=6))
    assert [len(b["y"]) for b in ev] == [8, 8, 8, 7] and ev[-1]["ids"][-1].tolist()[0] == EOS
    assert torch.equal(torch.cat([b["y"] for b in ev]), torch.tensor(labels))


def test_tokenizer_for_learns_from_training_text_only():
    data = ParallelCorpus([("ab", "cd")] * 3, [("xy", "zz")], "toy")
    assert training_texts(data) == ["ab", "cd"] * 3
    tok = tokenizer_for(data, DataConfig(tokenizer="char"))
    assert tok.chars == ["a", "b", "c", "d"]
    bpe = tokenizer_for(LabelledText(["héllo wörld"] * 4, [0, 1] * 2, [], [], ["a", "b"], "toy"),
                        DataConfig(tokenizer="bpe", vocab_size=280))
    assert bpe.kind == "bpe" and bpe.vocab_size <= 280
    with pytest.raises(DataError, match="data.tokenizer='word'; expected one of char, bpe"):
        tokenizer_for(data, DataConfig(tokenizer="word"))
    with pytest.raises(DataError, match="toy: data.tokenizer=bpe: vocab_size=10 is too small"):
        tokenizer_for(data, DataConfig(tokenizer="bpe", vocab_size=10))


def test_text_pipeline_end_to_end_on_dates():
    data = load_text(DataConfig(name="dates-en-de", count=100), "pairs")
    tok = tokenizer_for(data, DataConfig())
    assert encode_texts(["ab", "", "ba"], tok) == [tok.encode("ab"), [], tok.encode("ba")]
    src = encode_texts([s for s, _ in data.train], tok)
    tgt = encode_texts([t for _, t in data.train], tok)
    batch = PairBatches(src, tgt, 8, seed=0).batch(0)
    row = batch["tgt"][0]
    assert tok.decode(row) in [t for _, t in data.train] and row[0] == BOS


# ---------------------------------------------------------------------------------------------
# Downloads against a local server, then reading them

def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def text_mirror(tmp_path, monkeypatch):
    """A local server with tiny files in the real formats; yields url, checksums, hits."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "input.txt").write_text("".join(f"CITIZEN {i}:\nSpeak, speak.\n\n" for i in range(50)))
    reviews = {f"aclImdb/{split}/{label}/{i}_{8 if label == 'pos' else 3}.txt":
               f"{split} {label} {i}: fine film<br /><br />really".encode()
               for split in ("train", "test") for label in ("pos", "neg") for i in range(5)}
    reviews["aclImdb/train/unsup/0_0.txt"] = b"unlabelled"
    reviews["aclImdb/imdb.vocab"] = b"the\nfilm\n"
    (root / "aclImdb_v1.tar.gz").write_bytes(_tar_gz(reviews))
    en = [f"A dog runs number {i}." for i in range(12)]
    de = [f"Ein Hund rennt Nummer {i}." for i in range(12)]
    (root / "training.tar.gz").write_bytes(_tar_gz({"train.en": ("\n".join(en[:10]) + "\n").encode(),
                                                    "train.de": ("\n".join(de[:10]) + "\n").encode()}))
    (root / "validation.tar.gz").write_bytes(_tar_gz({"val.en": "\n".join(en[10:]).encode(),
                                                      "val.de": "\n".join(de[10:]).encode()}))
    (root / "evil.tar.gz").write_bytes(_tar_gz({"aclImdb/train/pos/0_9.txt": b"ok", "../escaped.txt": b"boom"}))
    checksums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()}
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", checksums, hits
    server.shutdown()
    server.server_close()
    thread.join()


def test_published_text_checksums_are_sha256():
    for name in ("tinyshakespeare", "imdb", "multi30k"):
        assert CHECKSUMS[name] and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in CHECKSUMS[name].values())


def test_fetch_text_datasets_then_load_them(tmp_path, text_mirror, monkeypatch):
    url, checksums, hits = text_mirror
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENLAB_CACHE", str(cache))
    with pytest.raises(DataError, match="tinyshakespeare is not downloaded yet .*genlab data fetch tinyshakespeare"):
        load_text(DataConfig(name="tinyshakespeare"), "lm")
    for name in ("tinyshakespeare", "imdb", "multi30k"):
        fetch(name, base_url=url, checksums=checksums, progress=False)
        assert is_fetched(name)
    assert sorted(hits) == ["/aclImdb_v1.tar.gz", "/input.txt", "/training.tar.gz", "/validation.tar.gz"]

    shakespeare = load_text(DataConfig(name="tinyshakespeare"), "lm")
    original = (tmp_path / "mirror" / "input.txt").read_text()
    assert shakespeare.train[0] + shakespeare.val[0] == original and shakespeare.train[0].endswith("\n")
    assert 0.08 < len(shakespeare.val[0]) / len(original) <= 0.1

    imdb = load_text(DataConfig(name="imdb"), "labels")
    assert imdb.classes == ["neg", "pos"] and len(imdb.train_texts) == 10 and len(imdb.val_texts) == 10
    assert "<br />" not in "".join(imdb.train_texts) and "fine film\nreally" in imdb.train_texts[0]
    assert not (cache / "datasets" / "imdb" / "aclImdb" / "train" / "unsup").exists()

    m30k = load_text(DataConfig(name="multi30k"), "pairs")
    assert len(m30k.train) == 10 and m30k.val == [("A dog runs number 10.", "Ein Hund rennt Nummer 10."),
                                                  ("A dog runs number 11.", "Ein Hund rennt Nummer 11.")]
    assert m30k.train[3] == ("A dog runs number 3.", "Ein Hund rennt Nummer 3.")

    fetch("multi30k", base_url=url, checksums=checksums, progress=False)  # already there: no download
    assert len(hits) == 4


def test_fetch_refuses_unsafe_archives_and_unknown_hashes(tmp_path, text_mirror):
    url, checksums, hits = text_mirror
    with pytest.raises(FetchError, match=r"refusing to unpack member '\.\./escaped\.txt'"):
        _fetch_renamed(tmp_path, url, checksums)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "c" / "datasets" / "escaped.txt").exists()
    assert not is_fetched("imdb", tmp_path / "c")

    with pytest.raises(FetchError) as err:
        fetch("tinyshakespeare", cache_dir=tmp_path / "d", base_url=url, progress=False,
              checksums={"input.txt": None})
    msg = str(err.value)
    assert checksums["input.txt"] in msg and "checksums=" in msg and "no published SHA-256" in msg
    assert list((tmp_path / "d" / "datasets" / "tinyshakespeare").iterdir()) == []


def _fetch_renamed(tmp_path, url, checksums):
    """Serve evil.tar.gz under the name fetch asks for, by pointing base_url at a folder with a copy."""
    import shutil
    from urllib.parse import urlparse

    mirror = tmp_path / "mirror"
    (mirror / "evil").mkdir(exist_ok=True)
    shutil.copy(mirror / "evil.tar.gz", mirror / "evil" / "aclImdb_v1.tar.gz")
    assert urlparse(url).hostname == "127.0.0.1"
    fetch("imdb", cache_dir=tmp_path / "c", base_url=url + "evil/", progress=False,
          checksums={"aclImdb_v1.tar.gz": checksums["evil.tar.gz"]})
