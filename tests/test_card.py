"""Model cards (genlab.card) and image provenance (genlab.provenance), end to end on tiny runs.

One conditional VAE, one GPT and one tiny classifier (the judge) are trained once per module; the
card must carry each section with the run's real figures, and every PNG the CLI writes from a run
must say it is AI-generated, by which weights, seed and settings.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genlab
from genlab.cli import main
from genlab.provenance import AI_COMMENT, PENDING, image_metadata

QUIET = dict(progress=False, log=lambda *a, **k: None)
SECTIONS = ["## Model details", "## Data", "## Training", "## Evaluation", "## Samples", "## Intended use",
            "## Limitations", "## Risks"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """GENLAB_CACHE for module-scoped fixtures, which run before conftest's per-test isolation."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE", str(tmp_path_factory.getbasetemp() / "genlab-cache"))
        yield


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("card") / "vae-digits"
    genlab.train("vae", data="digits", out=out, preset="tiny", steps=20, conditional=True,
                 overrides=["train.val_every=100000"], **QUIET)
    return out


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("card") / "gpt-pycode"
    genlab.train("gpt", data="pycode", out=out, preset="tiny", steps=20,
                 overrides=["model.block_size=16", "train.val_every=100000"], **QUIET)
    return out


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("card") / "judge"
    genlab.train("classifier", data="digits", out=out, steps=40,
                 overrides=["model.width=8", "train.batch_size=128", "train.lr=2e-3", "train.val_every=100000"],
                 **QUIET)
    return out


def ckpt(run: Path) -> dict:
    return json.loads((run / "checkpoint.json").read_text())


def png_text(path) -> dict[str, str]:
    with Image.open(path) as im:
        return dict(im.text)


def check_provenance(text: dict, run: Path) -> None:
    assert text["AI-Generated"] == "true"
    assert text["Comment"].startswith(AI_COMMENT)
    assert text["Software"] == f"genlab {genlab.__version__}"
    assert text["genlab:run"] == run.name
    assert text["genlab:family"] == json.loads((run / "config.json").read_text())["family"]


# ---- model cards --------------------------------------------------------------------------------


def test_image_card_before_and_after_evaluation(vae_run, judge_dir):
    from genlab.card import write_card

    card = write_card(vae_run)
    assert card == vae_run / "MODEL_CARD.md"
    text = card.read_text()
    for section in SECTIONS:
        assert section in text, section
    ck = ckpt(vae_run)
    assert f"{ck['parameters']:,}" in text and ck["parameters"] > 1000
    assert "| steps | 20 |" in text
    assert ck["files"]["model.safetensors"] in text
    assert "sklearn.datasets.load_digits" in text                       # the data's source
    assert "| latent_dim |" in text and "| num_classes | 10 |" in text  # configuration table
    assert "No evaluation yet" in text and f"genlab eval {vae_run}" in text
    assert "Memorisation:** not measured yet" in text
    assert "](samples/step-0000020.png)" in text                        # relative link to the preview
    assert (vae_run / "samples" / "step-0000020.png").exists()
    for caveat in ("trained on the same data", "depend on the sample count N", "only catches near-copies"):
        assert caveat in text

    report = genlab.evaluate(vae_run, n=100, seed=1, judge=judge_dir, **QUIET)
    text = write_card(vae_run).read_text()
    assert "No evaluation yet" not in text
    mem = next(r for r in report["rows"] if r["metric"] == "memorisation")
    assert f"{mem['value']:.1%} of the samples are near-copies" in text
    assert f"`memorisation` = {mem['value']:.4g}, N = 100" in text
    assert "**N = 100** samples, seed 1, judge `classifier:judge`" in text
    assert "| fid | realism |" in text and "Real-vs-real floor" in text
    assert not list(vae_run.glob(".*.tmp*"))  # written atomically: no temp file left


def test_text_card(gpt_run):
    from genlab.card import write_card

    text = write_card(gpt_run).read_text()
    for section in SECTIONS:
        assert section in text, section
    ck = ckpt(gpt_run)
    assert f"**Parameters:** {ck['parameters']:,}" in text
    assert "| steps | 20 |" in text and "| block_size | 16 |" in text
    assert "No evaluation yet" in text
    assert "verbatim copies" in text and "trained on the same data" not in text  # text caveats, not image ones
    preview = (gpt_run / "samples" / "step-0000020.txt").read_text()
    first = preview.split("\n\n----------\n\n")[0].strip()
    assert first[:40] in text  # the first generated text is quoted


def test_card_command_prints_path(gpt_run, capsys):
    (gpt_run / "MODEL_CARD.md").unlink(missing_ok=True)
    assert main(["card", str(gpt_run)]) == 0
    assert capsys.readouterr().out.strip() == str(gpt_run / "MODEL_CARD.md")
    assert (gpt_run / "MODEL_CARD.md").exists()
    assert main(["card", str(gpt_run / "nope")]) == 1  # a loud error, not a traceback


# ---- provenance of images -----------------------------------------------------------------------


def test_sample_png_and_npz_carry_provenance(vae_run, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", str(vae_run), "-n", "8", "--seed", "7", "--label", "3", "--out", str(out)]) == 0
    text = png_text(out)
    check_provenance(text, vae_run)
    assert text["genlab:seed"] == "7"
    assert text["genlab:weights_sha256"] == ckpt(vae_run)["files"]["model.safetensors"]
    assert text["genlab:step"] == "20" and text["genlab:kind"] == "samples"
    settings = json.loads(text["genlab:settings"])
    assert settings["label"] == 3 and settings["n"] == 8

    again = tmp_path / "again.png"
    main(["sample", str(vae_run), "-n", "8", "--seed", "7", "--label", "3", "--out", str(again)])
    assert again.read_bytes() == out.read_bytes()  # no timestamp: same seed, same file

    every = tmp_path / "every.png"
    main(["sample", str(vae_run), "-n", "10", "--seed", "0", "--out", str(every)])
    assert "every class" in json.loads(png_text(every)["genlab:settings"])["label"]

    npz = tmp_path / "threes.npz"
    assert main(["sample", str(vae_run), "-n", "8", "--seed", "7", "--label", "3", "--out", str(npz)]) == 0
    with np.load(npz, allow_pickle=False) as archive:
        meta = json.loads(str(archive["metadata"]))
    assert meta == text
    from genlab.config import DataConfig
    from genlab.data import load_images

    assert len(load_images(DataConfig(name=str(npz)))) == 8  # the extra array does not break reading it back


def test_interpolate_and_reconstruct_carry_provenance(vae_run, tmp_path):
    interp, recon = tmp_path / "interp.png", tmp_path / "recon.png"
    assert main(["interpolate", str(vae_run), "--seeds", "4", "5", "--frames", "3", "--rows", "2",
                 "--label", "1", "--out", str(interp)]) == 0
    assert main(["reconstruct", str(vae_run), "-n", "8", "--out", str(recon)]) == 0
    weights = ckpt(vae_run)["files"]["model.safetensors"]
    for path, kind in ((interp, "interpolation"), (recon, "reconstruction")):
        text = png_text(path)
        check_provenance(text, vae_run)
        assert text["genlab:kind"] == kind
        assert text["genlab:weights_sha256"] == weights
    it = png_text(interp)
    assert it["genlab:seed"] == "4 5"
    assert json.loads(it["genlab:settings"]) == {"seeds": [4, 5], "frames": 3, "rows": 2, "label": 1,
                                                "path": "slerp between the two seeds' latents"}
    rc = png_text(recon)
    assert rc["genlab:seed"] == "none" and "real held-out images" in rc["Comment"]


def test_training_preview_carries_provenance(vae_run):
    text = png_text(vae_run / "samples" / "step-0000020.png")
    check_provenance(text, vae_run)
    assert text["genlab:kind"] == "training preview"
    assert text["genlab:step"] == "20"
    assert text["genlab:weights_sha256"] == PENDING  # the preview is written before that step's checkpoint


def test_metadata_from_model_or_folder(vae_run):
    model = genlab.load(vae_run, device="cpu")
    a = image_metadata(model, seed=1, settings={"guidance": 2.0})
    b = image_metadata(str(vae_run), seed=1, settings={"guidance": 2.0})
    assert a == b
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in a.items())
    assert json.loads(a["genlab:settings"]) == {"guidance": 2.0}
