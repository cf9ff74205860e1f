"""Starting a run from another (--init-from), LoRA adapter runs, and merging them (genlab.adapt, genlab.derive)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import genlab
from genlab import kinds, registry
from genlab.adapt import base_dir, init_weights, label_tensors, relative_to
from genlab.cli import main
from genlab.derive import merge
from genlab.errors import ConfigError, RunError
from genlab.loading import load_config
from genlab.runs import WEIGHTS, load_weights
from genlab.training.run import build_config
from resume_util import check_exact_resume

QUIET = {"progress": False, "log": lambda s: None}
TINY_GPT = ["model.block_size=16", "model.n_layer=1", "model.d_model=32", "model.n_head=2", "train.batch_size=8"]


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("texts")
    a, b = root / "a.txt", root / "b.txt"
    a.write_text("def add(a, b):\n    return a + b\n\n" * 200)
    b.write_text("the cat sat on the mat, and the dog sat on the log.\n" * 200)
    return {"a": a, "b": b}


@pytest.fixture(scope="module")
def gpt_base(tmp_path_factory, texts) -> Path:
    out = tmp_path_factory.mktemp("runs") / "base"
    genlab.train("gpt", data=str(texts["a"]), out=out, preset="tiny", steps=30,
                 overrides=TINY_GPT + ["train.ema=0.9"], **QUIET)
    return out


@pytest.fixture(scope="module")
def gpt_lora(gpt_base, texts) -> Path:
    out = gpt_base.parent / "lora"
    genlab.train("gpt", data=str(texts["b"]), out=out, init_from=gpt_base, adapter="lora", steps=30,
                 overrides=["adapter.rank=2", "adapter.alpha=4", "train.lr=1e-2"], **QUIET)
    return out


def _logits(model, ids=None):
    ids = torch.arange(4, 16).view(2, 6) if ids is None else ids
    with torch.no_grad():
        return model.logits(ids)


def test_init_from_records_its_base_and_starts_from_its_ema_weights(gpt_base, texts, tmp_path):
    logs = []
    genlab.train("gpt", data=str(texts["b"]), out=tmp_path / "ft", init_from=gpt_base, steps=1,
                 overrides=["train.lr=1e-9", "train.warmup_steps=1"], progress=False, log=logs.append)
    doc = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert doc["init"]["run"] == relative_to(tmp_path / "ft", gpt_base)
    assert doc["init"]["sha256"] == genlab.runs.sha256((gpt_base / WEIGHTS).read_bytes())
    assert doc["model"] == json.loads((gpt_base / "config.json").read_text())["model"]  # the base's architecture
    assert any("starting from" in line for line in logs)
    ft, base = genlab.load(tmp_path / "ft", ema=False), genlab.load(gpt_base)  # base: its EMA weights
    assert torch.allclose(_logits(ft), _logits(base), atol=1e-4)   # one step at lr 1e-9 from the EMA weights
    raw = genlab.load(gpt_base, ema=False)
    assert not torch.allclose(_logits(ft), _logits(raw), atol=1e-4)


def test_lora_run_holds_only_its_adapters_and_leaves_the_base_as_it_was(gpt_base, gpt_lora):
    saved = load_file(gpt_lora / WEIGHTS)
    assert saved and all(k.rsplit(".", 1)[-1] in ("lora_A", "lora_B") for k in saved)   # gpt: no labels, no buffers
    assert (gpt_lora / WEIGHTS).stat().st_size < (gpt_base / WEIGHTS).stat().st_size / 4
    adapted = genlab.load(gpt_lora)
    base_weights = load_weights(gpt_base)[1]  # the EMA weights it started from
    state = adapted.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base_weights.items())  # frozen: not one weight moved
    assert any(bool(v.abs().sum()) for k, v in saved.items() if k.endswith("lora_B"))  # the adapters trained
    assert not torch.allclose(_logits(adapted), _logits(genlab.load(gpt_base)), atol=1e-4)


def test_merge_computes_what_the_adapter_run_computes(gpt_lora, tmp_path):
    out = merge(gpt_lora, tmp_path / "merged")
    merged, adapted = genlab.load(out), genlab.load(gpt_lora)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["adapter"]["type"] == "none" and cfg["derived"]["operation"] == "merge"
    assert not any("lora" in k for k in load_file(out / WEIGHTS))
    assert torch.allclose(_logits(merged), _logits(adapted), atol=1e-5)
    assert merged.run.tokenizer.to_json() == adapted.run.tokenizer.to_json()
    assert main(["merge", str(gpt_lora)]) == 0 and (gpt_lora.parent / "lora-merged" / "checkpoint.json").exists()
    assert main(["merge", str(gpt_lora)]) == 1           # the folder holds a run now: refused, not overwritten
    assert main(["merge", str(out), "--out", str(tmp_path / "again")]) == 1   # a plain run has nothing to merge


def test_an_adapter_run_refuses_a_changed_base(gpt_base, gpt_lora, texts, tmp_path):
    shutil.copytree(gpt_base, tmp_path / "base")
    shutil.copytree(gpt_lora, tmp_path / "lora")
    genlab.train("gpt", data=str(texts["a"]), out=tmp_path / "other", preset="tiny", steps=2,
                 overrides=TINY_GPT + ["train.seed=5"], **QUIET)
    shutil.rmtree(tmp_path / "base")  # a consistent, verifiable run in its place, but with other weights
    shutil.copytree(tmp_path / "other", tmp_path / "base")
    with pytest.raises(RunError, match="base run changed"):
        genlab.load(tmp_path / "lora")


def test_adapter_run_resumes_exactly(gpt_base, texts, tmp_path, monkeypatch):
    shutil.copytree(gpt_base, tmp_path / "base")
    check_exact_resume("gpt", str(texts["b"]), ["train.ckpt_every=10", "train.log_every=5", "train.ema=0.9"],
                       tmp_path, monkeypatch, init_from=tmp_path / "base", adapter="lora")


def test_a_new_vocabulary_is_refused(gpt_base, texts, tmp_path):
    with pytest.raises(ConfigError, match="tokenizer"):
        genlab.train("gpt", data=str(texts["b"]), out=tmp_path / "x", init_from=gpt_base, tokenizer="bpe",
                     steps=1, **QUIET)
    assert not (tmp_path / "x").exists()


def test_adapters_only_where_declared_and_only_on_a_base(gpt_base, texts, tmp_path):
    with pytest.raises(ConfigError, match="--init-from"):
        build_config("gpt", data=str(texts["b"]), adapter="lora")
    with pytest.raises(ConfigError, match="only from another lstm run"):
        build_config("lstm", data=str(texts["b"]), init_from=gpt_base)
    assert main(["train", "lstm", "--data", str(texts["a"]), "--preset", "tiny", "--steps", "2", "--out",
                 str(tmp_path / "l"), "--no-progress", "--set", "model.block_size=16"]) == 0
    assert main(["train", "lstm", "--data", str(texts["b"]), "--init-from", str(tmp_path / "l"), "--adapter",
                 "lora", "--steps", "2", "--out", str(tmp_path / "l2"), "--no-progress"]) == 1


# ---- images: a new label set, a new image size --------------------------------------------------------------

@pytest.fixture(scope="module")
def ddpm_07(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("img") / "ddpm07"
    genlab.train("ddpm", data="digits", out=out, preset="tiny", steps=5, conditional=True,
                 overrides=["data.classes=0,1,2,3,4,5,6,7"], **QUIET)
    return out


def _started(base: Path, run_dir: Path, overrides: list[str]):
    cfg = build_config("ddpm", data="digits", init_from=base, overrides=overrides)
    cfg.init.run = relative_to(run_dir, base)
    prep = kinds.prepare(cfg, run_dir, resume=False)
    model = registry.build("ddpm", cfg.model)
    return cfg, model, init_weights(model, cfg, run_dir, prep.describe["classes"])


def test_a_new_label_set_changes_only_the_tensors_it_reports(ddpm_07, tmp_path):
    cfg, model, report = _started(ddpm_07, tmp_path / "new", ["data.classes=9,0,1,2,3,4,5,6,7,8"])
    labels = label_tensors(cfg)
    assert list(labels) == ["unet.label_emb.weight"]
    assert len(report) == 1 and "unet.label_emb.weight" in report[0] and "2 label row(s) start fresh" in report[0]
    base = load_weights(ddpm_07)[1]  # the EMA weights it starts from
    state = model.state_dict()
    assert [k for k in base if k not in labels and not torch.equal(state[k], base[k])] == []
    emb, old = state["unet.label_emb.weight"], base["unet.label_emb.weight"]   # rows: 9 0..8 | null
    assert torch.equal(emb[1:9], old[0:8])            # classes 0..7 by name, moved one row down
    assert torch.equal(emb[10], old[8])               # the guidance null label, past the classes
    assert not torch.equal(emb[0], old[0]) and not any(torch.equal(emb[9], r) for r in old)  # 9 and 8: fresh


def test_the_same_label_set_copies_everything(ddpm_07, tmp_path):
    _, model, report = _started(ddpm_07, tmp_path / "same", ["init.weights=raw", "data.classes=0,1,2,3,4,5,6,7"])
    base = load_weights(ddpm_07)[0]
    assert report == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in base.items())


def test_few_shot_adaptation_trains_on_n_images_per_class(ddpm_07, tmp_path):
    genlab.train("ddpm", data="digits", out=tmp_path / "fs", init_from=ddpm_07, adapter="lora", steps=2,
                 overrides=["data.per_class=3", "train.batch_size=16"], **QUIET)
    doc = json.loads((tmp_path / "fs" / "config.json").read_text())
    assert doc["dataset"]["classes"] == [str(i) for i in range(10)] and doc["data"]["conditional"]
    assert genlab.load(tmp_path / "fs").sample(2, cond=9, steps=2).shape == (2, 1, 8, 8)
    png = tmp_path / "nines.png"
    assert main(["sample", str(tmp_path / "fs"), "-n", "2", "--label", "9", "--steps", "2", "--out", str(png)]) == 0
    base = json.loads(Image.open(png).text["genlab:base"])   # provenance names the base and its weights
    assert base == {"run": doc["init"]["run"], "weights_sha256": doc["init"]["sha256"], "adapter": "lora"}
    assert main(["card", str(tmp_path / "fs")]) == 0
    card = (tmp_path / "fs" / "MODEL_CARD.md").read_text()
    assert f"**Started from:** the run `{doc['init']['run']}`" in card and "**Adapter:** lora rank 4" in card


def test_an_image_size_the_architecture_cannot_take_is_refused(tmp_path):
    genlab.train("vae", data="digits", out=tmp_path / "vae", preset="tiny", steps=2, **QUIET)
    with pytest.raises(ConfigError, match=r"model.image_size 8 -> 16"):
        genlab.train("vae", data="digits", out=tmp_path / "vae16", init_from=tmp_path / "vae", image_size=16,
                     steps=1, **QUIET)


def test_adapters_with_the_base_training_too_need_no_base_to_load(gpt_base, texts, tmp_path):
    shutil.copytree(gpt_base, tmp_path / "base")
    genlab.train("gpt", data=str(texts["b"]), out=tmp_path / "both", init_from=tmp_path / "base", adapter="lora",
                 steps=3, overrides=["adapter.freeze=false", "train.lr=1e-2"], **QUIET)
    saved = load_file(tmp_path / "both" / WEIGHTS)
    assert "blocks.0.attn.q.weight" in saved and "blocks.0.attn.q.lora_A" in saved   # the whole model, adapters too
    before = _logits(genlab.load(tmp_path / "both"))
    shutil.rmtree(tmp_path / "base")
    assert torch.equal(_logits(genlab.load(tmp_path / "both")), before)


def test_adapter_and_int8_runs_serve(gpt_lora, tmp_path):
    from genlab.compress import compress
    from serve_util import ready_client

    q = compress(gpt_lora.parent / "base", tmp_path / "int8", quantize="int8")
    with ready_client([gpt_lora, q]) as client:
        for name in ("lora", "int8"):
            r = client.post(f"/v1/models/{name}/text", json={"prompt": "def ", "max_new_tokens": 8, "seed": 1})
            assert r.status_code == 200 and r.json()["text"].startswith("def "), r.text


def test_review_cases_adapter_base_symlinks_derived_runs(gpt_base, gpt_lora, texts, tmp_path, capsys):
    with pytest.raises(ConfigError, match="merge it first"):
        build_config("gpt", data=str(texts["b"]), init_from=gpt_lora)     # its weights are mostly its base's
    link = tmp_path / "link"
    link.symlink_to(gpt_base.parent, target_is_directory=True)            # a symbolic link on the way
    genlab.train("gpt", data=str(texts["b"]), out=link / "via-link", init_from=link / "base", adapter="lora",
                 steps=2, **QUIET)
    assert genlab.load(link / "via-link") is not None and genlab.load(gpt_base.parent / "via-link") is not None
    merged = merge(gpt_lora, tmp_path / "deeper" / "merged")
    cfg = load_config(merged)
    assert base_dir(merged, cfg).resolve() == gpt_base.resolve()          # init.run rewritten for the new folder
    assert main(["train", "gpt", "--resume", str(merged), "--no-progress"]) == 1
    assert "continue it with --init-from" in capsys.readouterr().err


def test_a_conditional_gan_adapts_to_other_classes(tmp_path):
    genlab.train("gan", data="digits", out=tmp_path / "g", preset="tiny", steps=2, conditional=True,
                 overrides=["data.classes=0,1,2,3,4,5,6,7"], **QUIET)
    genlab.train("gan", data="digits", out=tmp_path / "g2", init_from=tmp_path / "g", steps=2,
                 overrides=["data.classes=8,9"], **QUIET)   # its collapse watch starts afresh for two classes
    assert genlab.load(tmp_path / "g2").sample(2, cond=1).shape == (2, 1, 8, 8)


def test_runs_on_some_classes_hold_out_the_same_images():
    from genlab.config import DataConfig
    from genlab.data.sources import split_images

    _, _, every = split_images(DataConfig(name="digits"))
    _, _, some = split_images(DataConfig(name="digits", classes=["7", "3"]))
    mask = (every.labels == 7) | (every.labels == 3)
    assert torch.equal(some.images, every.images[mask]) and some.labels.unique().tolist() == [0, 1]
