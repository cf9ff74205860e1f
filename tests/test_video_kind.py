"""The video kind end to end on small moving shapes: the training preview, `genlab sample` (GIF, MP4, npz, a
prompt to continue), `genlab eval` (the video and frame judges, judge-FVD and the temporal rows with their
floors), the model card, the /video route, and the video families in `genlab data list` and `genlab info`."""

import base64
import io
import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

import genlab.kinds.image.judge as image_judge
import genlab.kinds.video.judge as video_judge
from genlab.cli import main
from genlab.config import DataConfig
from genlab.data.video_sources import load_video
from genlab.videoio import read_video_metadata, save_video
from serve_util import ready_client


def gif_frames(data: bytes) -> list[np.ndarray]:
    with Image.open(io.BytesIO(data)) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")))
    return out


def test_training_writes_a_preview_to_watch(video_run):
    gif = video_run / "samples" / "step-0000004.gif"
    frames = gif_frames(gif.read_bytes())
    assert len(frames) == 8 and frames[0].shape[1] > 4 * 16              # one clip per class, side by side
    meta = read_video_metadata(gif)
    assert meta["AI-Generated"] == "true" and "training preview" in meta["genlab:kind"]
    assert (video_run / "samples" / "step-0000004.png").exists()


def test_sample_writes_gif_mp4_and_npz_with_provenance(video_run, tmp_path):
    run = str(video_run)
    assert main(["sample", run, "-n", "3", "--label", "2", "--seed", "4", "--steps", "3",
                 "--out", str(tmp_path / "a.npz")]) == 0
    clips = load_video(DataConfig(name=str(tmp_path / "a.npz"), frames=8))
    assert clips.clips.shape == (3, 8, 3, 16, 16) and clips.labels.tolist() == [2, 2, 2]
    meta = json.loads((tmp_path / "a.npz.json").read_text())
    assert meta["genlab:seed"] == "4" and json.loads(meta["genlab:settings"])["label"] == 2
    assert main(["sample", run, "-n", "3", "--label", "2", "--seed", "4", "--steps", "3",
                 "--out", str(tmp_path / "b.npz")]) == 0
    assert torch.equal(load_video(DataConfig(name=str(tmp_path / "b.npz"), frames=8)).clips, clips.clips)
    for suffix in (".gif", ".mp4"):
        out = tmp_path / f"c{suffix}"
        assert main(["sample", run, "-n", "2", "--steps", "2", "--out", str(out)]) == 0
        assert read_video_metadata(out)["genlab:seed"] == "0" and out.with_suffix(".png").exists()
        with av.open(str(out)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 8
    assert main(["sample", run, "--out", str(tmp_path / "x.wav")]) == 1


def test_a_prompt_clip_begins_every_sample(video_run, tmp_path):
    real = load_video(DataConfig(name="moving-shapes", count=4, frames=8, image_size=16, seed=7))
    prompt = tmp_path / "prompt.npz"
    save_video(prompt, real.floats(slice(0, 1)), 8.0)
    out = tmp_path / "cont.npz"
    assert main(["sample", str(video_run), "-n", "2", "--steps", "2", "--prompt", str(prompt), "--context-frames",
                 "3", "--out", str(out)]) == 0
    got = load_video(DataConfig(name=str(out), frames=8)).clips
    assert torch.equal(got[:, :3], real.clips[:1, :3].expand(2, -1, -1, -1, -1))
    assert not torch.equal(got[:, 3:], real.clips[:1, 3:].expand(2, -1, -1, -1, -1))
    assert json.loads(json.loads((tmp_path / "cont.npz.json").read_text())["genlab:settings"])["context_frames"] == 3
    assert main(["sample", str(video_run), "--prompt", str(prompt), "--context-frames", "8",
                 "--out", str(tmp_path / "x.gif")]) == 1                # a clip has 8 frames: at most 7 given
    assert main(["sample", str(video_run), "--context-frames", "2", "--out", str(tmp_path / "x.gif")]) == 1


@pytest.mark.slow
def test_eval_scores_in_the_video_judges_features_with_floors(video_run, monkeypatch, capsys):
    monkeypatch.setattr(video_judge, "JUDGE_STEPS", 40)
    monkeypatch.setattr(image_judge, "JUDGE_STEPS", {"classifier": 40, "ae": 40})
    assert main(["eval", str(video_run), "-n", "24", "--no-progress", "--steps", "3"]) == 0
    report = json.loads((video_run / "eval.json").read_text())
    rows = {r["metric"]: r for r in report["rows"]}
    assert report["judge"]["kind"] == "videoclf"
    for metric in ("fvd", "kid", "precision", "recall", "coverage", "conditional_accuracy", "memorisation",
                   "order_score", "frame_fid", "frame_kid", "frame_precision", "frame_recall", "frame_coverage",
                   "temporal_change_w1", "plausible_motion"):
        assert rows[metric]["value"] is not None, metric
    assert "not comparable with published FVD" in rows["fvd"]["note"] and "I3D" in rows["fvd"]["note"]
    assert report["floor"]["fvd"] < rows["fvd@floor_n"]["value"]        # 4 steps of training are far from real
    assert rows["temporal_change_w1"]["floor"] < rows["temporal_change_w1"]["value"]
    assert rows["plausible_motion"]["floor"] > rows["plausible_motion"]["value"]
    assert rows["order_score"]["floor"] > rows["order_score"]["value"]
    assert rows["frame_fid"]["floor"] < rows["frame_fid"]["value"] and rows["frame_recall"]["axis"] == "diversity"
    assert main(["card", str(video_run)]) == 0
    card = (video_run / "MODEL_CARD.md").read_text()
    assert "I3D" in card and "step-0000004.png" in card


def test_the_video_route_answers_with_a_gif_or_mp4_and_a_filmstrip(video_run):
    with ready_client([video_run]) as client:
        info = client.get("/v1/models").json()["models"][0]
        assert info["routes"] == ["video"] and info["video"] == {"frames": 8, "fps": 8.0, "size": 16, "channels": 3}
        r = client.post("/v1/models/video-ddpm/video", json={"n": 2, "label": 1, "seed": 3, "steps": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        frames = gif_frames(base64.b64decode(body["video"]))
        assert len(frames) == 8 and body["media_type"] == "image/gif" and body["fps"] == 8.0
        assert body["provenance"]["AI-Generated"] == "true" and body["filmstrip"]
        again = client.post("/v1/models/video-ddpm/video", json={"n": 2, "label": 1, "seed": 3, "steps": 2}).json()
        assert again["video"] == body["video"]                           # seeded
        raw = client.post("/v1/models/video-ddpm/video", json={"steps": 2, "format": "mp4"},
                          headers={"accept": "video/mp4"})
        assert raw.headers["content-type"] == "video/mp4" and raw.headers["x-ai-generated"] == "true"
        with av.open(io.BytesIO(raw.content)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 8
        assert client.post("/v1/models/video-ddpm/video", json={"label": 4}).status_code == 422
        assert client.post("/v1/models/video-ddpm/video", json={"format": "avi"}).status_code == 422
        assert client.post("/v1/models/video-ddpm/video", json={"n": 10**6}).status_code == 422
        assert client.post("/v1/models/video-ddpm/images", json={}).status_code == 404


def test_data_list_and_show_cover_the_video_built_ins(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "moving-shapes" in out and "moving-digits" in out and "video clips" in out
    assert main(["data", "show", "moving-digits", "-n", "3", "--out", str(tmp_path / "d.png")]) == 0
    assert "3 clips of 16 frames" in capsys.readouterr().out
    with Image.open(tmp_path / "d.png") as im:
        assert im.height < im.width                                     # a row per clip, 16 frames across
    assert main(["data", "show", "moving-shapes", "-n", "2", "--out", str(tmp_path / "s.gif")]) == 0
    assert len(gif_frames((tmp_path / "s.gif").read_bytes())) == 16


def test_a_judge_for_other_clips_is_refused(video_run, tmp_path, capsys):
    other = tmp_path / "judge"
    assert main(["train", "videoclf", "--data", "moving-shapes", "--set", "data.count=40", "--set", "data.frames=6",
                 "--set", "data.image_size=16", "--preset", "tiny", "--steps", "2", "--out", str(other),
                 "--no-progress", "--set", "train.batch_size=8"]) == 0
    capsys.readouterr()
    assert main(["eval", str(video_run), "--judge", str(other), "-n", "8", "--steps", "2", "--no-progress"]) == 1
    assert "judges clips of 6 frames of 3x16x16; this run makes 8 frames" in capsys.readouterr().err
