"""The audio kind end to end on a small spoken-digits set: train, sample (one WAV, or a folder), the preview,
eval (the audio judge, judge-FAD and the other judged metrics), card, and the /audio route."""

import base64
import io
import json

import numpy as np
import pytest
import soundfile as sf

import genlab.kinds.audio.judge as audio_judge
from genlab.audioio import read_wav_metadata
from genlab.cli import main
from conftest import needs_espeak
from serve_util import ready_client

pytestmark = needs_espeak

DATA = ["--data", "spoken-digits", "--set", "data.count=200"]   # 8 kHz, 1 s clips


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A conditional wavegan and audio-ddpm, trained for a few steps (the properties below need no quality)."""
    root = tmp_path_factory.mktemp("audio-runs")
    for family in ("wavegan", "audio-ddpm"):
        assert main(["train", family, *DATA, "--conditional", "--preset", "tiny", "--steps", "4", "--out",
                     str(root / family), "--no-progress", "--set", "train.batch_size=16",
                     "--set", "train.sample_every=4", "--set", "train.val_every=4"]) == 0
    return root


def test_training_writes_a_preview_to_listen_to_and_look_at(runs):
    wav = runs / "wavegan" / "samples" / "step-0000004.wav"
    audio, rate = sf.read(wav)
    assert rate == 8000 and len(audio) == 10 * 8000 + 9 * 2000    # one clip per digit, 0.25 s apart
    assert read_wav_metadata(wav)["AI-Generated"] == "true"
    assert (runs / "wavegan" / "samples" / "step-0000004.png").exists()


@pytest.mark.parametrize("family", ["wavegan", "audio-ddpm"])
def test_sample_writes_wavs_with_provenance(runs, family, tmp_path):
    out = tmp_path / "three.wav"
    assert main(["sample", str(runs / family), "-n", "3", "--label", "7", "--seed", "2", "--out", str(out)]) == 0
    audio, rate = sf.read(out)
    assert rate == 8000 and len(audio) == 3 * 8000 + 2 * 2000 and np.abs(audio).max() <= 1
    meta = json.loads(out.with_name("three.wav.json").read_text())
    assert meta["genlab:seed"] == "2" and json.loads(meta["genlab:settings"])["label"] == 7
    assert read_wav_metadata(out) == meta and out.with_suffix(".png").exists()
    folder = tmp_path / "clips"
    assert main(["sample", str(runs / family), "-n", "3", "--seed", "2", "--label", "7", "--out", str(folder)]) == 0
    first, _ = sf.read(folder / "sample-0000.wav")
    assert np.allclose(first, audio[:8000], atol=1 / 32768)           # the same seed gives the same clips
    assert main(["sample", str(runs / family), "--out", str(tmp_path / "x.png")]) == 1


def test_eval_scores_in_the_audio_judges_features(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(audio_judge, "JUDGE_STEPS", 30)
    assert main(["eval", str(runs / "wavegan"), "-n", "40", "--no-progress"]) == 0
    report = json.loads((runs / "wavegan" / "eval.json").read_text())
    rows = {r["metric"]: r for r in report["rows"]}
    assert report["judge"]["kind"] == "audioclf"
    for metric in ("fad", "kid", "precision", "recall", "inception_score", "conditional_accuracy", "memorisation"):
        assert rows[metric]["value"] is not None, metric
    assert "not comparable with published FAD" in rows["fad"]["note"]
    assert report["floor"]["fad"] < rows["fad"]["value"]           # real held-out clips are nearer than 4 steps' noise
    assert main(["card", str(runs / "wavegan")]) == 0
    card = (runs / "wavegan" / "MODEL_CARD.md").read_text()
    assert "producing audio presented as real" in card and "VGGish" in card and "step-0000004.png" in card


def test_the_audio_route_answers_with_wavs_and_a_spectrogram(runs):
    with ready_client([runs / "wavegan", runs / "audio-ddpm"]) as client:
        info = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert info["wavegan"]["routes"] == ["audio"] and info["wavegan"]["audio"] == {"sample_rate": 8000,
                                                                                     "seconds": 1.0}
        for name in ("wavegan", "audio-ddpm"):
            r = client.post(f"/v1/models/{name}/audio", json={"n": 2, "label": 3, "seed": 1})
            assert r.status_code == 200, r.text
            body = r.json()
            clips = [sf.read(io.BytesIO(base64.b64decode(c))) for c in body["clips"]]
            assert [(len(a), rate) for a, rate in clips] == [(8000, 8000)] * 2
            assert body["provenance"]["AI-Generated"] == "true" and body["spectrogram"]
            again = client.post(f"/v1/models/{name}/audio", json={"n": 2, "label": 3, "seed": 1}).json()
            assert again["clips"] == body["clips"]                          # seeded
        wav = client.post("/v1/models/wavegan/audio", json={"n": 2}, headers={"accept": "audio/wav"})
        assert wav.headers["content-type"] == "audio/wav" and len(sf.read(io.BytesIO(wav.content))[0]) == 18000
        assert client.post("/v1/models/wavegan/audio", json={"label": 10}).status_code == 422
        assert client.post("/v1/models/wavegan/images", json={}).status_code == 404
