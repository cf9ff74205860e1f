"""The README's commands run as written.

Every `genlab ...` line in the README must parse; the quick ones run in order, in a fresh folder, exactly as
written except for the training budget (`--minutes N` / `--steps N` become a few steps), a video's denoising
steps and the quiet flags that skip previews. What cannot run here, or takes minutes, is listed in NOT_RUN with the
reason.
"""

import argparse
import glob
import shlex
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import pytest
from PIL import Image

from genlab.cli import build_parser, main
from genlab.config import DataConfig
from genlab.data.image_pairs import load_pairs
from genlab.data.video_sources import load_video
from genlab.data import music
from genlab.data.music import bach_chorales
from genlab.musicio import write_midi
from genlab.videoio import save_video

README = Path(__file__).parents[1] / "README.md"
CHORALES = 24          # of music21's chorales, for the README's music commands
QUIET = ["--no-progress", "--set", "train.sample_every=100000", "--set", "train.val_every=100000"]
NOT_RUN = {  # the first words of a README command -> why it is not run here
    "genlab data fetch": "downloads (tests/test_fetch.py covers fetch against a local server)",
    "genlab train vae --data mnist": "needs `genlab data fetch mnist` (the network)",
    "genlab serve": "a long-running server (tests/test_serve.py and tests/test_browser.py cover it)",
    "genlab eval": "trains a judge and scores 1000 samples, minutes in all (tests/test_eval.py, test_cli.py)",
    "genlab sample runs/ddpm-digits --sampler ddpm": "1000 ancestral steps (tests/test_diffusion.py covers it)",
    "genlab augment": "trains 18 generators and about 250 classifiers, about an hour (tests/test_augment.py runs "
                      "small experiments)",
}


def readme_commands() -> list[list[str]]:
    """The `genlab` command lines of the README's indented code blocks, trailing comments removed."""
    return [shlex.split(line, comments=True) for line in README.read_text().splitlines()
            if line.startswith("    genlab ")]


def test_the_readme_has_commands_and_every_one_parses():
    cmds = readme_commands()
    assert len(cmds) > 30
    parser = build_parser()
    for cmd in cmds:
        try:
            parser.parse_args(cmd[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {shlex.join(cmd)}")


def _quick(cmd: list[str]) -> list[str]:
    """The command with its training budget cut to a few steps (resumes go a few steps further), and a video's
    sampling to a few denoising steps (the full count costs over a minute here and runs the same code)."""
    if cmd[1] == "sample" and "video" in cmd[2] and "--steps" not in cmd:
        return cmd + ["--steps", "5"]
    if cmd[1] != "train":
        return cmd
    out, skip = [], False
    for i, word in enumerate(cmd):
        if skip:
            skip = False
        elif word in ("--minutes", "--steps"):
            skip = True
        else:
            out.append(word)
    small = (["--set", "data.count=300"] if "spoken-digits" in cmd or "moving-shapes" in cmd   # 6000 clips:
             else [])                                                                            # slow here
    return out + ["--steps", "16" if "--resume" in cmd else "8", *small, *QUIET]


def _inputs(root: Path) -> None:
    """The user's own files that README commands name: an image folder, MNIST IDX files, a text corpus, a folder
    of recordings, a folder of GIFs and a GIF to continue."""
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / "my_images" / label).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "my_images" / label / f"{i}.png")
    (root / "my_mnist").mkdir()
    n = 80
    images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
    (root / "my_mnist" / "train-images-idx3-ubyte").write_bytes(
        (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images.tobytes())
    (root / "my_mnist" / "train-labels-idx1-ubyte").write_bytes(
        (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + (np.arange(n) % 10).astype(np.uint8).tobytes())
    (root / "my_corpus.txt").write_text(Path(argparse.__file__).read_text())   # any sizeable text will do
    (root / "my_midi_files").mkdir()
    for c in bach_chorales("none", limit=CHORALES):
        write_midi(root / "my_midi_files" / f"{c.id}.mid", c.text, {})
    write_midi(root / "opening.mid", c.text, {})
    t = np.arange(8000) / 8000
    for label, hz in (("low", 220), ("high", 880)):
        (root / "my_recordings" / label).mkdir(parents=True)
        for i in range(40):   # 72 training clips: one batch of 64
            tone = 0.5 * np.sin(2 * np.pi * hz * (1 + i / 100) * t) + 0.01 * rng.standard_normal(len(t))
            sf.write(root / "my_recordings" / label / f"{i}.wav", tone, 8000, subtype="PCM_16")
    clips = load_video(DataConfig(name="moving-shapes", count=40, image_size=24))
    for i, clip in enumerate(clips.floats()):
        folder = root / "my_gifs" / clips.classes[int(clips.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        save_video(folder / f"{i}.gif", clip[None], 8.0)
    save_video(root / "start.gif", clips.floats(slice(0, 1)), 8.0)
    pairs = load_pairs(DataConfig(name="edges2shapes", count=40))
    for i in range(40):
        a, b = (((x[i].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy() for x in (pairs.a, pairs.b))
        for folder, image in (("A", a[:, :, 0]), ("B", b)):
            (root / "my_pairs" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "my_pairs" / folder / f"{i}.png")
        if i < 3:
            (root / "my_edges").mkdir(exist_ok=True)
            Image.fromarray(a[:, :, 0]).save(root / "my_edges" / f"edge{i}.png")


@pytest.mark.slow
def test_the_readme_commands_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # bach-chorales: the first CHORALES files (parsing all 413 takes about a minute)
    monkeypatch.setattr(music, "bach_chorales", partial(bach_chorales, limit=CHORALES))
    _inputs(tmp_path)
    ran = []
    for cmd in readme_commands():
        text = shlex.join(cmd)
        if any(text.startswith(prefix) for prefix in NOT_RUN):
            continue
        argv = _quick(cmd)[1:]
        if argv[0] == "compare":  # the README's `runs/*` is a shell glob
            argv = ["compare", *sorted(glob.glob("runs/*"))]
        assert main(argv) == 0, f"README command failed: {text}"
        ran.append(text)
    assert len(ran) >= 25
    # what the commands promise, beyond exit status 0
    with np.load("threes.npz") as z:
        assert (z["labels"] == 3).all() and len(z["images"]) == 1000
    assert Path("runs/vae-digits/report.html").exists()
    assert Path("runs/vae-digits/MODEL_CARD.md").exists() and Path("runs/vae-digits/onnx/export.json").exists()
    assert Path("stars.png").exists() and Path("sevens.png").exists() and Path("attn.html").exists()
    assert Path("chorales.mid").exists() and Path("chorales.wav").exists() and Path("continued/all.png").exists()
    assert Path("triangles.gif").exists() and Path("clips.mp4").exists() and Path("next.png").exists()
    assert Path("translations.png").exists() and sorted(p.name for p in Path("translated").iterdir()) == [
        "edge0.png", "edge1.png", "edge2.png"]
    assert len(list(Path("runs").iterdir())) >= 9
