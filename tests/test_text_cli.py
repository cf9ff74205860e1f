"""The text families end to end through the CLI on tiny configs: train, eval, generate, translate, classify."""

import json

import pytest

from genlab.cli import main
from genlab.registry import FAMILIES
from genlab.kinds.text.textgen import cut_at_stop

QUIET = ["--preset", "tiny", "--no-progress", "--set", "train.val_every=100000", "--set", "train.sample_every=20"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    plan = {"gpt": ["--data", "pycode", "--set", "model.block_size=32"],
            "lstm": ["--data", "pycode", "--tokenizer", "bpe", "--vocab-size", "300"],
            "seq2seq": ["--data", "dates-en-de", "--set", "data.count=400"],
            "textclf": ["--data", "docstrings"]}
    for family, args in plan.items():
        assert main(["train", family, *args, "--steps", "20", "--out", str(root / family), *QUIET]) == 0
    return root


def test_text_families_are_registered_with_their_data_kind():
    assert {FAMILIES[f].kind for f in ("gpt", "lstm", "seq2seq", "textclf")} == {"lm", "pairs", "labels"}


def test_runs_save_their_tokenizer_and_vocabulary(runs):
    for family in ("gpt", "lstm", "seq2seq", "textclf"):
        tok = json.loads((runs / family / "tokenizer.json").read_text())
        cfg = json.loads((runs / family / "config.json").read_text())
        assert tok["type"] == ("bpe" if family == "lstm" else "char")
        assert cfg["model"]["vocab_size"] == cfg["dataset"]["vocab_size"] > 4
    assert json.loads((runs / "textclf" / "config.json").read_text())["model"]["num_classes"] == 10
    assert (runs / "gpt" / "samples" / "step-0000020.txt").read_text().strip()


def test_generate_is_seeded_and_keeps_the_prompt(runs, capsys):
    args = ["generate", str(runs / "gpt"), "--prompt", "def ", "--max-new-tokens", "30", "--top-p", "0.9"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert first == capsys.readouterr().out and first.startswith("def ")


def test_prompt_outside_a_char_vocabulary_is_a_clear_error(runs, capsys):
    assert main(["generate", str(runs / "gpt"), "--prompt", "\u2603"]) == 1
    assert "vocabulary" in capsys.readouterr().err


def test_translate_and_classify_explain(runs, capsys, tmp_path):
    assert main(["translate", str(runs / "seq2seq"), "Tuesday, March 3, 2026", "--beam", "3"]) == 0
    assert capsys.readouterr().out.startswith("Tuesday, March 3, 2026\t")
    page = tmp_path / "explain.html"
    assert main(["classify", str(runs / "textclf"), "Return the number of seconds since the epoch.", "--explain",
                 "--html", str(page)]) == 0
    assert page.read_text().count("<span title=") == len("Return the number of seconds since the epoch.")


@pytest.mark.parametrize("family, metrics", [
    ("gpt", {"val_loss", "perplexity", "bits_per_char", "distinct_2", "self_bleu", "copied_8gram_share",
             "parse_share"}),
    ("seq2seq", {"bleu", "chrf", "exact_match"}),
    ("textclf", {"accuracy", "macro_f1", "baseline_accuracy", "baseline_macro_f1"}),
])
def test_eval_writes_the_task_metrics(runs, family, metrics):
    assert main(["eval", str(runs / family), "-n", "4"]) == 0
    ev = json.loads((runs / family / "eval.json").read_text())
    values = {r["metric"]: r["value"] for r in ev["rows"]}
    assert metrics <= set(values)
    assert all(v is None or v == v for v in values.values())          # no NaN
    if family == "textclf":
        assert len(ev["confusion"]) == 10 and 0.3 < values["baseline_accuracy"] <= 1


def test_cut_at_stop():
    assert cut_at_stop("abc\n\ndef", ["\n\n", "zz"]) == "abc"
    assert cut_at_stop("abc", []) == "abc"
