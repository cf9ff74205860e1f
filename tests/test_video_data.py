"""Video data: the moving-shapes and moving-digits built-ins (shapes, seeding, balance, exact bounces, the motion
label), the readers (GIF / MP4 / WebM folders, .npy/.npz arrays: frame-rate and length normalisation, resizing,
classes), bad input (a corrupt file, one frame, mixed sizes, a file that is too long, pickles, the memory budget),
the loader's temporal crops and the GIF/MP4/npz writers."""

from __future__ import annotations

import json
import logging
import zipfile

import av
import numpy as np
import pytest
import torch
from PIL import Image

from genlab.config import DataConfig
from genlab.data.moving import DIRECTIONS, bounce
from genlab.data.video_readers import resample
from genlab.data.video_sources import load_video
from genlab.errors import DataError, UsageError
from genlab.kinds.video.prepare import VideoLoader
from genlab.videoio import filmstrip, read_video_metadata, save_video


def cfg(name, **kw) -> DataConfig:
    return DataConfig(name=str(name), **kw)


def marked_frames(count: int, size: int = 16) -> list[np.ndarray]:
    """RGB frames whose brightness encodes their index (frame i is 8 * i + 20 everywhere, up to frame 28, and a
    red square moves along the top)."""
    frames = []
    for i in range(count):
        f = np.full((size, size, 3), (8 * i + 20) % 256, np.uint8)
        f[2:6, i % (size - 4):i % (size - 4) + 4] = (250, 0, 0)
        frames.append(f)
    return frames


def write_gif(path, frames: list[np.ndarray], ms: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=ms, loop=0, optimize=False, disposal=1)


def write_av(path, frames: list[np.ndarray], fps: int, codec: str = "libx264") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "0"} if codec == "libx264" else {"lossless": "1"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def index_of(clip: torch.Tensor) -> list[int]:
    """The frame indices `marked_frames` encoded, read back from a clip (F, C, H, W) uint8 (its bottom rows)."""
    return [round((float(f[:, -4:].float().mean()) - 20) / 8) for f in clip]


# ---- the built-ins ---------------------------------------------------------------------------------


def test_bounce_is_the_closed_form_of_stepping_and_reflecting():
    p, v, lo, hi, path = 3.0, 2.7, 1.0, 12.0, []
    for _ in range(40):
        path.append(p)
        p += v
        if p > hi:
            p, v = 2 * hi - p, -v
        elif p < lo:
            p, v = 2 * lo - p, -v
    got = bounce(np.array(3.0), np.array(2.7), np.arange(40.0), np.array(1.0), np.array(12.0))
    assert np.allclose(got, path)


@pytest.mark.parametrize("name, channels, classes", [("moving-shapes", 3, 4), ("moving-digits", 1, 10)])
def test_the_built_ins_are_seeded_balanced_clips_that_move(name, channels, classes):
    ds = load_video(cfg(name, count=40, frames=12))
    assert ds.clips.shape == (40, 12, channels, 32, 32) and ds.clips.dtype == torch.uint8
    assert ds.num_classes == classes and torch.bincount(ds.labels).tolist() == [40 // classes] * classes
    assert torch.equal(ds.clips, load_video(cfg(name, count=40, frames=12)).clips)
    assert not torch.equal(ds.clips, load_video(cfg(name, count=40, frames=12, seed=1)).clips)
    change = (ds.clips[:, 1:].float() - ds.clips[:, :-1].float()).abs().mean(dim=(2, 3, 4))
    assert (change > 0).float().mean() > 0.95     # clips move (a digit pasted at whole pixels may pause a frame)
    t = ds.tracks
    assert t.shape == (40, 12, 1, 2) and (t >= 0).all() and (t <= 32).all()
    speed = (t[:, 1:] - t[:, :-1]).norm(dim=-1)
    assert speed.max() <= 0.12 * 32 * 1.0001                            # never faster than SPEED allows


def test_the_motion_label_is_the_quadrant_of_the_first_step():
    ds = load_video(cfg("moving-shapes", count=256, motion_label=True, frames=4))
    assert ds.num_classes == 16 and ds.classes[1] == "circle/up-right"
    start = ds.tracks[:, 0, 0]
    step = ds.tracks[:, 1, 0] - start
    quadrant = (step[:, 0] > 0).long() + 2 * (step[:, 1] > 0).long()    # y grows downwards
    ok = ((start > 11.5) & (start < 20.5)).all(-1)    # too far from the walls (margin + a step) to bounce at once
    assert ok.sum() > 20 and torch.equal(quadrant[ok], ds.labels[ok] % len(DIRECTIONS))


def test_two_objects_and_longer_clips_for_crops():
    ds = load_video(cfg("moving-digits", count=10, objects=2, frames=8, crop_frames=4, image_size=48))
    assert ds.clips.shape == (10, 12, 1, 48, 48) and ds.tracks.shape == (10, 12, 2, 2)
    with pytest.raises(DataError, match="1 or 2 objects"):
        load_video(cfg("moving-shapes", count=4, objects=3))
    with pytest.raises(DataError, match="at least 2 frames"):
        load_video(cfg("moving-shapes", count=4, frames=1))
    with pytest.raises(DataError, match="memory_budget_gb"):
        load_video(cfg("moving-shapes", count=10**7))                    # refused before drawing
    with pytest.raises(DataError, match="source_digits"):
        load_video(cfg("moving-digits", count=4, source_digits="emnist"))


# ---- readers -------------------------------------------------------------------------------------


def test_a_folder_of_gif_mp4_and_webm_files_reads_with_classes_and_values_kept(tmp_path):
    frames = marked_frames(16)
    write_gif(tmp_path / "a" / "one.gif", frames, 125)
    write_av(tmp_path / "b" / "two.mp4", frames, 8)
    write_av(tmp_path / "b" / "three.webm", frames, 8, codec="libvpx-vp9")
    ds = load_video(cfg(tmp_path, frames=16))
    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [0, 1, 1] and ds.clips.shape == (3, 16, 3, 16, 16)
    for clip in ds.clips:
        assert index_of(clip) == list(range(16))
        square = clip[0, :, 2:6, 0:4].float().mean(dim=(1, 2))            # frame 0's red square, through the codecs
        assert square[0] > 180 and square[1] < 100


def test_frame_rates_are_normalised_by_time_and_long_files_cut_into_clips(tmp_path):
    write_gif(tmp_path / "slow.gif", marked_frames(8), 250)              # 4 fps, 2 s
    ds = load_video(cfg(tmp_path, frames=16, fps=8))
    assert index_of(ds.clips[0]) == [i // 2 for i in range(16)]          # each frame held twice
    write_av(tmp_path / "fast.mp4", marked_frames(24), 24)               # 24 fps, 1 s
    (tmp_path / "slow.gif").unlink()
    ds = load_video(cfg(tmp_path, frames=4, fps=8))
    assert len(ds) == 2 and index_of(ds.clips[0]) == [0, 3, 6, 9] and index_of(ds.clips[1]) == [12, 15, 18, 21]
    assert list(resample([0, 0.12, 0.24, 0.36], ["a", "b", "c"], 8.0)) == ["a", "b", "c"]   # GIF's 1/100 s


def test_bad_video_files_are_clear_errors_or_dropped_with_a_warning(tmp_path, caplog):
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_gif(good / "ok.gif", marked_frames(8), 125)
    (good / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (good / "short.gif").parent.mkdir(exist_ok=True)
    write_gif(good / "short.gif", marked_frames(3), 125)
    with caplog.at_level(logging.WARNING, logger="genlab.data"):
        ds = load_video(cfg(good, frames=8))
    assert len(ds) == 1 and ds.dropped == 2
    assert "dropped 1 unreadable video files" in caplog.text and "broken.mp4" in caplog.text
    assert "shorter than one clip of 8 frames" in caplog.text and "short.gif" in caplog.text

    (bad / "x.mp4").parent.mkdir(parents=True)
    (bad / "x.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="none of the 1 video files"):
        load_video(cfg(bad, frames=8))
    Image.new("RGB", (16, 16)).save(bad / "still.gif")
    with pytest.raises(DataError, match="single frame"):
        load_video(cfg(bad, frames=8))
    (bad / "still.gif").unlink()
    write_gif(bad / "big.gif", marked_frames(8, size=24), 125)
    write_gif(bad / "small.gif", marked_frames(8), 125)
    with pytest.raises(DataError, match="must share one size, or pass --image-size"):
        load_video(cfg(bad, frames=8))
    assert load_video(cfg(bad, frames=8, image_size=16)).clips.shape == (2, 8, 3, 16, 16)
    with pytest.raises(DataError, match="more than data.max_seconds=0.5"):
        load_video(cfg(bad, frames=2, max_seconds=0.5))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no video files"):
        load_video(cfg(tmp_path / "empty", frames=8))


def test_a_long_file_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    write_av(tmp_path / "long.mp4", marked_frames(80), 8)               # 10 s
    decoded = []
    real = av.container.InputContainer.decode
    monkeypatch.setattr(av.container.InputContainer, "decode", lambda self, *a, **k: decoded.append(1) or
                        real(self, *a, **k))
    with pytest.raises(DataError, match="is 10 s long, more than data.max_seconds=5"):
        load_video(cfg(tmp_path, frames=8, max_seconds=5))
    assert not decoded


@pytest.mark.parametrize("layout", ["ntchw", "nthwc", "nthw", "float01", "npz"])
def test_arrays_of_clips_in_every_layout(tmp_path, layout):
    x = np.random.default_rng(0).integers(0, 256, (5, 6, 3, 8, 8)).astype(np.uint8)
    want = torch.from_numpy(x)
    path = tmp_path / "clips.npy"
    if layout == "ntchw":
        np.save(path, x)
    elif layout == "nthwc":
        np.save(path, x.transpose(0, 1, 3, 4, 2))
    elif layout == "nthw":
        np.save(path, x[:, :, 0])
        want = want[:, :, :1]
    elif layout == "float01":
        np.save(path, x.astype(np.float32) / 255)
    else:
        path = tmp_path / "clips.npz"
        np.savez(path, clips=x, labels=np.arange(5) % 2, classes=np.array(["even", "odd"]))
    ds = load_video(cfg(path, frames=3))
    assert len(ds) == 10 and torch.equal(ds.clips[::2], want[:, :3]) and torch.equal(ds.clips[1::2], want[:, 3:])
    if layout == "npz":
        assert ds.classes == ["even", "odd"] and ds.labels.tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 0, 0]


def test_bad_arrays_are_clear_errors(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"expected \(N, T, C, H, W\)"):
        load_video(cfg(tmp_path / "flat.npy"))
    np.save(tmp_path / "short.npy", np.zeros((4, 3, 8, 8), np.uint8))
    with pytest.raises(DataError, match="clips are 3 frames long"):
        load_video(cfg(tmp_path / "short.npy", frames=4))
    np.save(tmp_path / "hot.npy", np.full((2, 4, 8, 8), 3.0, np.float32))
    with pytest.raises(DataError, match=r"expected \[0, 1\] or \[-1, 1\]"):
        load_video(cfg(tmp_path / "hot.npy", frames=4))
    np.savez(tmp_path / "pickled.npz", clips=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="pickled"):
        load_video(cfg(tmp_path / "pickled.npz"))
    np.savez(tmp_path / "other.npz", images=np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match="no `clips`"):
        load_video(cfg(tmp_path / "other.npz"))
    huge = tmp_path / "huge.npy"   # a header that declares 10^12 bytes; the file itself is tiny
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (10**6, 16, 3, 144, 144)})
    with pytest.raises(DataError, match="memory_budget_gb"):
        load_video(cfg(huge))
    with pytest.raises(DataError, match="unknown video dataset"):
        load_video(cfg(tmp_path / "missing"))


def test_conditional_needs_labelled_clips(tmp_path):
    write_gif(tmp_path / "a.gif", marked_frames(8), 125)
    with pytest.raises(DataError, match="no labels"):
        load_video(cfg(tmp_path, frames=8, conditional=True))


# ---- the loader ----------------------------------------------------------------------------------


def test_batches_are_seeded_temporal_crops_of_the_longer_clips():
    data = cfg("moving-shapes", count=16, frames=6, crop_frames=4, flip=True)
    ds = load_video(data)
    loader = VideoLoader(ds, 8, seed=3, data=data)
    b = loader.batch(5)
    assert b["x"].shape == (8, 6, 3, 32, 32) and b["x"].min() >= -1 and b["x"].max() <= 1
    assert torch.equal(b["x"], VideoLoader(ds, 8, seed=3, data=data).batch(5)["x"])
    idx = loader.order.indices(5)
    starts = set()
    for x, i in zip(b["x"], idx):   # each item is a window of 6 consecutive frames, maybe mirrored
        long = ds.floats(slice(int(i), int(i) + 1))[0]
        hits = [s for s in range(5) for flip in (False, True)
                if torch.allclose(x, long[s:s + 6].flip(-1) if flip else long[s:s + 6])]
        assert len(hits) >= 1
        starts.add(hits[0])
    assert len(starts) > 1                                                # the windows start at different frames
    labelled = cfg("moving-shapes", count=16, frames=6, motion_label=True, flip=True)
    assert not VideoLoader(load_video(labelled), 8, 0, labelled).flip    # a flip would change the direction label


# ---- writers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gif", ".mp4", ".npz"])
def test_written_clips_read_back_with_their_provenance(tmp_path, suffix):
    ds = load_video(cfg("moving-shapes", count=3, frames=8))
    out = tmp_path / f"clips{suffix}"
    save_video(out, ds.floats(), 8.0, {"genlab:seed": "4"}, labels=ds.labels, nrow=3)
    assert json.loads(out.with_name(out.name + ".json").read_text()) == {"genlab:seed": "4"}
    if suffix == ".npz":
        back = load_video(cfg(out, frames=8))
        assert torch.equal(back.clips, ds.clips) and torch.equal(back.labels, ds.labels)
        with zipfile.ZipFile(out) as z:
            assert "metadata.npy" in z.namelist()
        return
    assert read_video_metadata(out) == {"genlab:seed": "4"}
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 8
    width = frames[0].shape[1]
    assert width >= 3 * 32 * 2                                          # the 3 clips side by side, upscaled
    assert np.abs(frames[0].astype(int) - frames[4].astype(int)).mean() > 1   # it moves


def test_filmstrip_has_a_row_per_clip_and_bad_shapes_are_refused():
    clips = torch.zeros(2, 5, 1, 8, 8)
    strip = filmstrip(clips, upscale=1)
    assert strip.shape[0] == 2 * 8 + 3 * 2 and strip.shape[1] == 5 * 8 + 6 * 2
    with pytest.raises(UsageError, match=r"expected \(N, F, C, H, W\)"):
        filmstrip(torch.zeros(5, 1, 8, 8))
    with pytest.raises(UsageError, match="ending in"):
        save_video("x.avi", clips, 8.0)


def test_moving_digits_from_mnist_after_fetching_it(tmp_path, monkeypatch):
    """`genlab data fetch mnist` against a local mirror serving the real file format (28x28 digits), then the
    bouncing digits on the 64x64 canvas Moving MNIST uses."""
    import hashlib
    import http.server
    import threading
    from functools import partial

    from genlab.data.fetch import FILES, fetch
    from test_data import write_idx

    root = tmp_path / "mirror"
    root.mkdir()
    rng = np.random.default_rng(0)
    images = np.zeros((30, 28, 28), np.uint8)
    images[:, 6:22, 10:18] = rng.integers(100, 256, (30, 16, 8))         # a bright block per "digit"
    labels = (np.arange(30) % 10).astype(np.uint8)
    for part, n in (("train", 25), ("t10k", 5)):
        write_idx(root / f"{part}-images-idx3-ubyte.gz", images[:n])
        write_idx(root / f"{part}-labels-idx1-ubyte.gz", labels[:n])
    checksums = {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in FILES}
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    try:
        with pytest.raises(DataError, match="genlab data fetch mnist"):
            load_video(cfg("moving-digits", count=4, source_digits="mnist"))
        fetch("mnist", base_url=f"http://127.0.0.1:{server.server_address[1]}/", checksums=checksums,
              progress=False)
    finally:
        server.shutdown()
        server.server_close()
    ds = load_video(cfg("moving-digits", count=20, source_digits="mnist", objects=2, frames=6))
    assert ds.clips.shape == (20, 6, 1, 64, 64) and ds.num_classes == 10
    assert (ds.clips.float().amax(dim=(2, 3, 4)) >= 100).all()          # the glyphs are on the canvas
    with pytest.raises(DataError, match="at least 32"):
        load_video(cfg("moving-digits", count=4, source_digits="mnist", image_size=24))


def test_gif_delays_add_up_exactly_and_tiny_delays_play_as_browsers_show_them(tmp_path):
    write_gif(tmp_path / "ten.gif", marked_frames(20), 100)             # 10 fps: every other frame at 5 fps
    assert index_of(load_video(cfg(tmp_path, frames=10, fps=5)).clips[0]) == list(range(0, 20, 2))
    (tmp_path / "ten.gif").unlink()
    write_gif(tmp_path / "fast.gif", marked_frames(8), 10)              # 10 ms: browsers show 100 ms
    assert index_of(load_video(cfg(tmp_path, frames=8, fps=10)).clips[0]) == list(range(8))


def test_clips_cut_from_one_file_stay_on_one_side_of_the_split(tmp_path):
    from genlab.data.videos import split_clips

    for i in range(10):
        write_gif(tmp_path / f"{i}.gif", marked_frames(8), 125)           # each file gives 2 clips of 4 frames
    ds = load_video(cfg(tmp_path, frames=4))
    assert len(ds) == 20 and ds.groups.tolist() == [i // 2 for i in range(20)]
    train, val = split_clips(ds, 0.2, seed=0)
    assert len(val) == 4 and not set(train.groups.tolist()) & set(val.groups.tolist())


def test_a_npz_s_own_frame_rate_is_resampled_to_data_fps(tmp_path):
    clips = load_video(cfg("moving-shapes", count=2, frames=4)).floats()
    save_video(tmp_path / "slow.npz", clips, 4.0)
    back = load_video(cfg(tmp_path / "slow.npz", frames=8, fps=8))
    assert torch.equal(back.clips[:, ::2], back.clips[:, 1::2])          # each frame shown twice
    assert torch.equal(back.clips[:, ::2], load_video(cfg("moving-shapes", count=2, frames=4)).clips)


def test_a_video_too_big_to_decode_is_refused_from_its_header(tmp_path):
    write_av(tmp_path / "a.mp4", marked_frames(16, size=32), 8)
    with pytest.raises(DataError, match="decoding 16 frames of 32x32"):
        load_video(cfg(tmp_path, frames=8, memory_budget_gb=1e-5))


def test_mp4_keeps_a_fractional_frame_rate(tmp_path):
    save_video(tmp_path / "x.mp4", torch.zeros(1, 5, 1, 8, 8), 12.5)
    with av.open(str(tmp_path / "x.mp4")) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(12.5)
