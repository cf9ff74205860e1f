"""The music kind end to end on a small MIDI folder (conftest's music_run: 12 chorales and a file that is not MIDI,
a tiny gpt): the kind claims the data and keeps the run, MIDI folders are transposed by the key their notes imply,
training previews are MIDI, WAV and a piano roll, `genlab sample` writes MIDI with provenance and follows a prompt,
eval gives the music metrics beside the held-out pieces' own values, the card, and the /music route."""

import base64
import io
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import genlab
from genlab import kinds
from genlab.card import write_card
from genlab.cli import main
from genlab.data.music import music_pieces
from genlab.data.tokenizers import EOS
from genlab.evaluation.music_metrics import in_key_share
from genlab.kinds.music.compose import compose, one_after_another, opening, read_prompt
from genlab.kinds.music.evaluate import ROWS
from genlab.kinds.music.prepare import RENDER_RATE, music_corpus
from genlab.kinds.music.roll import MARGIN, PITCH_PX, STEP_PX, VOICE_COLOURS, piano_roll
from genlab.kinds.text.prepare import TEXT_SEPARATOR
from genlab.loading import load_config
from genlab.musicio import from_text, key_of, parse, read_midi, read_midi_metadata, render_wav
from resume_util import check_exact_resume
from serve_util import ready_client

SHORT = ["--max_new_tokens", "48"]


def onsets(music) -> set:
    """(onset, voice, pitch) of every note: what a MIDI file keeps even where a model's notes overlap."""
    return {(n.onset, n.voice, n.pitch) for n in music.notes}


def test_the_music_kind_hosts_language_models_on_the_data_it_claims(music_run, tmp_path):
    run, folder = music_run
    assert kinds.of("gpt", "bach-chorales").name == "music" and kinds.of("lstm", str(folder)).name == "music"
    assert kinds.of("gpt", "pycode").name == "lm" and kinds.of("gpt", str(tmp_path)).name == "lm"
    assert kinds.of("vae", "bach-chorales").name == "image"          # it hosts the lm kind's families only
    cfg = load_config(run)
    assert cfg.data.tokenizer == "music" and kinds.of_run(cfg).name == "music"
    gone = replace(cfg, data=replace(cfg.data, name=str(tmp_path / "moved")))   # the folder moved: still music
    assert kinds.of_run(gone).name == "music"
    assert json.loads((run / "tokenizer.json").read_text())["type"] == "music"
    dataset = json.loads((run / "config.json").read_text())["dataset"]
    assert (dataset["train_documents"], dataset["val_documents"]) == (10, 2)   # notes.mid dropped; split by piece


def test_a_midi_folder_is_transposed_from_the_key_its_notes_imply(music_run):
    _, folder = music_run
    asis = {p.id: from_text(p.text) for p in music_pieces(str(folder), "none")}
    assert len({key_of(m) for m in asis.values()}) > 2, "the chorales as written should be in several keys"
    in_c = music_pieces(str(folder), "c")
    assert {key_of(from_text(p.text)) for p in in_c} <= {(0, "major"), (9, "minor")}
    assert all(from_text(p.text) == asis[p.id].transpose(p.shift) and -6 <= p.shift <= 5 for p in in_c)
    augmented = music_pieces(str(folder), "augment")
    assert len(augmented) > 3 * len(asis) and {p.id for p in augmented if p.primary} == set(asis)
    assert all(from_text(p.text) == asis[p.id] for p in augmented if p.primary)


def test_training_previews_are_midi_wav_and_a_piano_roll_with_provenance(music_run):
    run, _ = music_run
    stem = run / "samples" / "step-0000060"
    texts = stem.with_suffix(".txt").read_text().split(TEXT_SEPARATOR)
    assert len(texts) == 3 and any(parse(t)[0].notes for t in texts)   # 60 steps: some notes parse
    joined = parse(one_after_another(texts))[0]
    assert onsets(read_midi(stem.with_suffix(".mid"))) == onsets(joined)
    meta = read_midi_metadata(stem.with_suffix(".mid"))
    assert meta["genlab:kind"] == "training preview" and meta["AI-Generated"] == "true"
    wave, rate = sf.read(stem.with_suffix(".wav"))
    assert rate == RENDER_RATE and len(wave) == len(render_wav(one_after_another(texts), RENDER_RATE))
    assert np.array_equal(np.asarray(Image.open(stem.with_suffix(".png")).convert("RGB")), piano_roll(texts))


def test_the_piano_roll_draws_each_note_at_its_time_and_pitch_in_its_voice_colour():
    roll = piano_roll(["bar v0 p72 d4 v3 p48 d8 t4 v0 p74 d4", "bar v1 p60 d16"])
    top = 74 + MARGIN
    per_piece = (top - (48 - MARGIN) + 1) * PITCH_PX                  # the shared range: 46..76
    assert roll.shape == (2 * per_piece + 2, 16 * STEP_PX, 3)

    def cell(piece, pitch, step):    # the top-left pixel of a note's box
        return tuple(roll[piece * (per_piece + 2) + (top - pitch) * PITCH_PX, step * STEP_PX + 1])

    colour = [tuple(c) for c in VOICE_COLOURS]
    assert cell(0, 72, 0) == cell(0, 72, 3) == colour[0] and cell(0, 74, 4) == colour[0]
    assert cell(0, 48, 7) == colour[3] and cell(0, 48, 8) != colour[3]      # d8: eight sixteenths long
    assert cell(0, 73, 2) != colour[0] and cell(1, 60, 15) == colour[1]


def test_sample_writes_the_pieces_as_midi_wav_and_a_piano_roll(music_run, tmp_path):
    run, _ = music_run
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert main(["sample", str(run), "-n", "3", "--seed", str(seed), "--out", str(tmp_path / f"{name}.mid"),
                     *SHORT]) == 0
    same, other = ((tmp_path / f"{x}.mid").read_bytes() for x in "bc")
    assert (tmp_path / "a.mid").read_bytes() == same != other
    model = genlab.load(run)
    texts = compose(model, model.run.tokenizer, 3, generator=torch.Generator().manual_seed(5),
                    max_new_tokens=48)
    assert onsets(read_midi(tmp_path / "a.mid")) == onsets(parse(one_after_another(texts))[0])
    meta = read_midi_metadata(tmp_path / "a.mid")
    assert meta["genlab:seed"] == "5" and json.loads(meta["genlab:settings"])["max_new_tokens"] == 48
    assert json.loads((tmp_path / "a.mid.json").read_text()) == meta
    assert sf.info(tmp_path / "a.wav").samplerate == RENDER_RATE and (tmp_path / "a.png").exists()

    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "folder"), *SHORT]) == 0
    assert sorted(p.name for p in (tmp_path / "folder").glob("*.mid")) == ["all.mid", "sample-0000.mid",
                                                                          "sample-0001.mid"]


def test_a_prompt_begins_every_piece(music_run, tmp_path):
    run, folder = music_run
    prompt_file = sorted(folder.glob("*.mid"))[0]
    prompt = read_prompt(prompt_file)
    want = parse(prompt)[0]
    assert want == opening(read_midi(prompt_file), 2) and len(want.bars) == 2
    assert main(["sample", str(run), "-n", "2", "--prompt", str(prompt_file), "--out", str(tmp_path / "p"),
                 *SHORT]) == 0
    for f in ("sample-0000.mid", "sample-0001.mid"):
        got = read_midi(tmp_path / "p" / f)
        assert onsets(want) <= onsets(got)
    assert json.loads(read_midi_metadata(tmp_path / "p" / "all.mid")["genlab:settings"])["prompt"] == prompt
    # the model continues the prompt: it is given the prompt's tokens after the <eos> that starts a piece
    model, seen = genlab.load(run), []
    real = model.sample
    model.sample = lambda n, cond=None, **kw: seen.append(cond) or real(n, cond=cond, **kw)
    texts = compose(model, model.run.tokenizer, 2, prompt=prompt, generator=torch.Generator().manual_seed(0),
                    max_new_tokens=24)
    assert seen == [[EOS] + model.run.tokenizer.encode(prompt)] and all(t.startswith(prompt) for t in texts)


@pytest.mark.parametrize("args, message", [
    (["--label", "1"], "not conditioned on a label"),
    (["--out", "x.png"], "expected a .mid file or a folder"),
    (["--prompt", "missing.mid"], "no such file"),
])
def test_bad_sample_requests_are_clear_errors(music_run, tmp_path, monkeypatch, capsys, args, message):
    run, _ = music_run
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(run), "-n", "1", *SHORT, *args]) == 1
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.mid")) and not list(tmp_path.glob("*.png"))


def test_a_prompt_file_outside_the_grammar_is_refused(music_run, tmp_path, capsys):
    run, _ = music_run
    (tmp_path / "p.txt").write_text("bar v0 p60 d4 hello")
    assert main(["sample", str(run), "-n", "1", "--prompt", str(tmp_path / "p.txt"), "--out",
                 str(tmp_path / "x.mid")]) == 1
    assert "1 word(s) are not music tokens" in capsys.readouterr().err


def test_eval_reports_the_music_metrics_beside_the_held_out_pieces(music_run):
    run, _ = music_run
    report = genlab.evaluate(run, n=4, controls={"max_new_tokens": 48}, log=lambda *a: None)
    rows = {r["metric"]: r for r in report["rows"]}
    assert set(rows) == set(ROWS) and json.loads((run / "eval.json").read_text())["rows"] == report["rows"]
    for key in ("pitch_class_overlap", "interval_overlap", "duration_overlap", "in_key_share", "copy_share"):
        assert 0 <= rows[key]["value"] <= 1
    vocab = genlab.load(run).config.vocab_size
    assert 0 < rows["bits_per_token"]["value"] < math.log2(vocab), "60 steps should beat a uniform guess"
    held_out = [parse(t)[0] for t in music_corpus(load_config(run)).val]
    assert rows["in_key_share"]["floor"] == pytest.approx(in_key_share(held_out))
    card = write_card(run).read_text()
    assert "| held-out data |" in card and "copy_share" in card and "8-onset n-grams" in card
    assert "--out samples.mid" in card


def test_the_music_route_answers_with_midi_wav_and_a_piano_roll(music_run):
    import mido

    run, folder = music_run
    prompt = read_prompt(sorted(folder.glob("*.mid"))[0])
    with ready_client([run]) as client:
        (info,) = client.get("/v1/models").json()["models"]
        assert info["routes"] == ["music"] and info["controls"]["max_new_tokens"]["default"] == 384
        url = f"/v1/models/{info['name']}/music"
        body = {"n": 2, "seed": 3, "max_new_tokens": 48}
        out = client.post(url, json=body).json()
        assert out == client.post(url, json=body).json()                       # seeded
        assert len(out["pieces"]) == 2 and out["provenance"]["AI-Generated"] == "true"
        for p in out["pieces"]:
            wave, rate = sf.read(io.BytesIO(base64.b64decode(p["wav"])))
            assert rate == RENDER_RATE and len(wave) == len(render_wav(p["text"], RENDER_RATE))
            midi = mido.MidiFile(file=io.BytesIO(base64.b64decode(p["midi"])))
            assert sum(m.type == "note_on" and m.velocity > 0 for t in midi.tracks for m in t) == \
                len(parse(p["text"])[0].notes)
        assert Image.open(io.BytesIO(base64.b64decode(out["piano_roll"]))).size[0] > 0
        led = client.post(url, json={"n": 1, "prompt": prompt, "max_new_tokens": 24}).json()
        assert led["pieces"][0]["text"].startswith(prompt) and led["settings"]["prompt"] == prompt
        as_midi = client.post(url, json=body, headers={"Accept": "audio/midi"})
        assert as_midi.headers["content-type"] == "audio/midi" and as_midi.content[:4] == b"MThd"
        as_wav = client.post(url, json=body, headers={"Accept": "audio/wav"})
        assert as_wav.headers["content-type"] == "audio/wav" and as_wav.content[:4] == b"RIFF"
        for bad, field, words in (({"prompt": "bar hello"}, "prompt", "not music tokens"),
                                  ({"prompt": "v0 p5 d4"}, "prompt", "not in this run's music vocabulary"),
                                  ({"n": 1000}, "n", "over this server's limit"),
                                  ({"max_new_tokens": 5000}, "max_new_tokens", "over this server's limit")):
            r = client.post(url, json=bad)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == field and words in r.text, r.text


def test_a_music_run_resumes_exactly(music_run, tmp_path, monkeypatch):
    """An lstm in bf16 with EMA on the MIDI folder: a copy of the run taken at its step-10 checkpoint, resumed,
    runs only steps 10..19 and ends bit-identical to the original (weights, EMA, optimizer state, metrics)."""
    _, folder = music_run
    check_exact_resume("lstm", str(folder), ["train.sample_every=100000", "train.val_every=100000",
                                             "train.ckpt_every=10", "train.log_every=10", "train.precision=bf16",
                                             "train.ema=0.9"], tmp_path, monkeypatch)
    assert kinds.of_run(load_config(tmp_path / "b")).name == "music"
