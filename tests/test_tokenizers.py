"""Character and byte-level BPE tokenizers: exact round trips, special ids, unknown characters, save/load."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from genlab.data.tokenizers import (BOS, EOS, PAD, SPECIALS, UNK, BPETokenizer, CharTokenizer, load_tokenizer,
                                    save_tokenizer, tokenizer_from_json, train_tokenizer)

CODE = '''def greet(name: str) -> str:
    """Say hello."""
    if not name:
        raise ValueError("empty name")\r\n    return f"Hello, {name}!"  # 挨拶 👋

class Point:\n\tx: float = 0.0\n\n\n'''
PROSE = ("Grüße aus Köln! Ça va? Ελληνικά, русский, 日本語のテキスト, emoji 🎉🐍, "
         "tabs\tand  double  spaces,   trailing   \n\nnew paragraphs\n")
TRICKY = ["", " ", "\n", "\n\n\n", "  leading and trailing  ", "<eos> <pad> <bos> <unk> as plain text",
          "\x00\x01\x7f control bytes", "never seen: ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010FFFF", "a" * 500, "ÿ" * 3 + "\r\n" * 3]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return train_tokenizer("bpe", [CODE, PROSE] * 20, vocab_size=400)


@pytest.mark.parametrize("text", [CODE, PROSE] + TRICKY)
def test_bpe_round_trips_any_text_exactly(bpe, text):
    ids = bpe.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert bpe.decode(ids) == text
    assert bpe.decode(torch.tensor(ids, dtype=torch.long)) == text


def test_bpe_reserves_special_ids_and_never_emits_them_for_text(bpe):
    assert [bpe.hf.token_to_id(s) for s in SPECIALS] == [PAD, BOS, EOS, UNK] == [0, 1, 2, 3]
    assert 260 <= bpe.vocab_size <= 400
    ids = bpe.encode("x <eos> y <pad>\n" + PROSE)
    assert min(ids) >= len(SPECIALS) and max(ids) < bpe.vocab_size
    # BPE actually merged something: common code is shorter than its bytes.
    assert len(bpe.encode(CODE)) < len(CODE.encode()) / 2


def test_decode_skips_special_ids_and_does_not_stop_at_eos(bpe):
    a, b = bpe.encode("left"), bpe.encode(" right")
    assert bpe.decode([BOS] + a + [EOS] + b + [PAD, PAD]) == "left right"
    char = train_tokenizer("char", ["abc"])
    assert char.decode([BOS, 4, EOS, 5, PAD, UNK, 6]) == "abc"


def test_char_vocabulary_is_specials_then_sorted_characters():
    tok = train_tokenizer("char", ["hello", "world\n"])
    assert isinstance(tok, CharTokenizer)
    assert tok.chars == sorted(set("helloworld\n"))
    assert tok.vocab_size == 4 + len(set("helloworld\n"))
    assert tok.encode("\nd") == [4, 5]          # "\n" < "d" < "e" ...
    assert tok.decode(tok.encode("hello world\n".replace(" ", ""))) == "helloworld\n"


def test_char_strict_error_lists_unknown_characters():
    tok = train_tokenizer("char", ["abc abc"])
    with pytest.raises(ValueError) as err:
        tok.encode("abc Zé€ abc", strict=True)
    msg = str(err.value)
    assert "'Z'" in msg and "'é'" in msg and "'€'" in msg and "'a'" not in msg
    assert "character-level" in msg


def test_char_unknown_characters_fall_back_to_unk_with_one_warning(caplog):
    tok = train_tokenizer("char", ["abc abc"])
    with caplog.at_level(logging.WARNING, logger="genlab.data"):
        ids = tok.encode("aZbZé", strict=False)
    assert ids == [tok.stoi["a"], UNK, tok.stoi["b"], UNK, UNK]
    warnings = [r for r in caplog.records if r.name == "genlab.data"]
    assert len(warnings) == 1 and "'Z'" in warnings[0].getMessage() and "'é'" in warnings[0].getMessage()


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_gives_identical_encodings(tmp_path, kind):
    tok = train_tokenizer(kind, [CODE, PROSE] * 5, vocab_size=300)
    path = save_tokenizer(tok, tmp_path / "tokenizer.json")
    assert json.loads(path.read_text())["type"] == kind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]  # no temp file left behind
    for again in (load_tokenizer(path), load_tokenizer(tmp_path), tokenizer_from_json(tok.to_json())):
        assert type(again) is type(tok) and again.vocab_size == tok.vocab_size
        for text in (CODE, PROSE, "<eos> literal"):
            assert again.encode(text) == tok.encode(text)
            assert again.decode(again.encode(text)) == tok.decode(tok.encode(text))


def test_bad_kinds_sizes_and_json_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer 'word'; expected one of char, bpe"):
        train_tokenizer("word", ["x"])
    with pytest.raises(ValueError, match="at least 260"):
        train_tokenizer("bpe", ["x"], vocab_size=100)
    with pytest.raises(ValueError, match="empty text"):
        train_tokenizer("char", [""])
    (tmp_path / "tokenizer.json").write_text('{"type": "wordpiece"}')
    with pytest.raises(ValueError, match="tokenizer.json: tokenizer JSON has type 'wordpiece'"):
        load_tokenizer(tmp_path)
