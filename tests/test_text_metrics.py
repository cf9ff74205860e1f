"""Text metrics against hand-computed values."""

import math

import pytest

from genlab.evaluation import text_metrics as T


def test_bits_per_char_and_perplexity():
    assert T.perplexity(math.log(7)) == pytest.approx(7)
    # 10 tokens at ln 2 nats each over 5 characters = 2 bits per character
    assert T.bits_per_char(math.log(2), tokens=10, chars=5) == pytest.approx(2.0)


def test_distinct_n_counts_unique_ngrams():
    texts = [["a", "b", "a", "b"], ["a", "b"]]
    assert T.distinct_n(texts, 1) == pytest.approx(2 / 6)
    assert T.distinct_n(texts, 2) == pytest.approx(2 / 4)     # ab, ba, ab, ab -> {ab, ba}


def test_self_bleu_is_high_for_copies_and_low_for_different_texts():
    same = ["the cat sat on the mat today"] * 4
    varied = ["the cat sat on the mat", "a dog ran in a park", "green ideas sleep furiously now",
              "seven lazy wolves howl at dawn"]
    assert T.self_bleu(same) == pytest.approx(100.0)
    assert T.self_bleu(varied) < 20


def test_copied_span_share():
    train = T.ngram_set(list(range(20)), 3)
    assert T.copied_span_share([[0, 1, 2, 3]], train, n=3) == 1.0
    assert T.copied_span_share([[0, 1, 2, 99]], train, n=3) == 0.5


def test_trim_to_statements_and_parse_share():
    code = "import os\n\ndef f(x):\n    return x + 1\n\ndef g(y):\n    return y +"
    assert T.trim_to_statements(code) == "import os\n\ndef f(x):\n    return x + 1\n"
    assert T.parse_share([code, "def (", "x = 1\ny = (2"]) == pytest.approx(2 / 3)


def test_translation_scores():
    s = T.translation_scores(["Dienstag, 3. März 2026", "ganz falsch"], ["Dienstag, 3. März 2026", "Montag"])
    assert s["exact_match"] == 0.5 and 0 < s["bleu"] < 100 and 0 < s["chrf"] < 100
    assert T.translation_scores(["a b c d"], ["a b c d"])["bleu"] == pytest.approx(100.0)


def test_classification_scores_and_baseline():
    s = T.classification_scores([0, 1, 1, 2], [0, 1, 2, 2], 3)
    assert s["accuracy"] == 0.75 and s["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert s["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    texts = ["good great fine", "bad awful poor"] * 20
    pred = T.bow_baseline(texts, [1, 0] * 20, ["great good", "awful bad"])
    assert list(pred) == [1, 0]
