"""`genlab compress` (pruning, int8) and int8 ONNX export: the maths, and the run folders they write."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genlab
from genlab import registry
from genlab.cli import main
from genlab.compress import compress, prunable, prune_mlp_units, prune_unstructured
from genlab.errors import ConfigError
from genlab.runs import WEIGHTS
from genlab.training.run import build_config

QUIET = {"progress": False, "log": lambda s: None}
TINY_GPT = ["model.block_size=16", "model.n_layer=2", "model.d_model=32", "model.n_head=2", "train.batch_size=8"]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("c")
    (root / "a.txt").write_text("def add(a, b):\n    return a + b\n\n" * 200)
    genlab.train("gpt", data=str(root / "a.txt"), out=root / "gpt", preset="tiny", steps=40,
                 overrides=TINY_GPT + ["train.ema=0.9"], **QUIET)
    return root / "gpt"


def _logits(model):
    with torch.no_grad():
        return model.logits(torch.arange(4, 16).view(2, 6) % model.config.vocab_size)


def test_pruning_zero_is_the_identity_and_r_zeroes_that_share():
    torch.manual_seed(0)
    model = registry.build("ddpm", registry.model_config("ddpm", "tiny", in_channels=1, image_size=8))
    with torch.no_grad():  # a trained model has no zero-initialised layers left
        for p in model.parameters():
            p.normal_()
    before = {id(getattr(m, n)): getattr(m, n).detach().clone() for m, n in prunable(model)}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prune_unstructured(model, 0.0)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    prune_unstructured(model, 0.3)
    for module, name in prunable(model):
        w, w0 = getattr(module, name), before[id(getattr(module, name))]
        assert int((w == 0).sum()) == round(0.3 * w.numel()), name   # per layer, the stated share
        assert w0[w == 0].abs().max() <= w0[w != 0].abs().min()      # by magnitude: the smallest went
        assert torch.equal(w[w != 0], w0[w != 0])                    # and the rest is untouched
    with pytest.raises(ConfigError, match="--prune 1.0"):
        prune_unstructured(model, 1.0)


def test_pruning_a_spectrally_normalised_gan():
    torch.manual_seed(0)
    gan = registry.build("gan", registry.model_config("gan", "tiny", in_channels=1, image_size=8))
    with torch.no_grad():
        for p in gan.parameters():
            p.normal_()
    layers = prunable(gan)
    assert any(name == "original" for _, name in layers)   # spectral norm's stored weight
    prune_unstructured(gan, 0.5)
    for module, name in layers:
        w = getattr(module, name)
        assert int((w == 0).sum()) == round(0.5 * w.numel())
    conv = next(m for m in gan.modules() if isinstance(m, torch.nn.Conv2d) and hasattr(m, "parametrizations"))
    assert float((conv.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)  # the weight the layer uses


def test_structured_pruning_removes_the_weakest_hidden_units_exactly():
    """Hidden units whose weights are zero contribute nothing: removing exactly those leaves the output as it was."""
    torch.manual_seed(0)
    cfg = build_config("gpt", preset="tiny", overrides=["model.vocab_size=30"] + TINY_GPT)
    model = registry.build("gpt", cfg.model).eval()
    with torch.no_grad():
        for block in model.blocks:
            dead = torch.randperm(block.mlp[0].out_features)[: block.mlp[0].out_features // 2]
            block.mlp[0].weight[dead] = 0
            block.mlp[0].bias[dead] = 0
            block.mlp[2].weight[:, dead] = 0
    narrow, new_cfg = prune_mlp_units(model, cfg, 0.5)
    assert new_cfg.model.d_ff == 2 * cfg.model.d_model and cfg.model.d_ff == 0   # 4d -> 2d; the source untouched
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in model.parameters())
    ids = torch.arange(4, 16).view(2, 6)
    with torch.no_grad():
        assert torch.allclose(narrow.logits(ids), model.logits(ids), atol=1e-5)
    with pytest.raises(ConfigError, match="Transformer MLPs"):
        prune_mlp_units(registry.build("ddpm", registry.model_config("ddpm", "tiny")), cfg, 0.5)


def test_compressed_runs_record_their_source_and_load(gpt, tmp_path):
    out = compress(gpt, tmp_path / "p", prune=0.5)
    doc = json.loads((out / "config.json").read_text())
    assert doc["compress"]["prune"] == 0.5 and doc["derived"]["operation"] == "compress"
    assert doc["derived"]["sha256"] == genlab.runs.sha256((gpt / WEIGHTS).read_bytes())
    pruned = genlab.load(out)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in prunable(pruned))
    total = sum(getattr(m, n).numel() for m, n in prunable(pruned))
    assert abs(zeros / total - 0.5) < 0.01
    assert main(["generate", str(out), "--max-new-tokens", "5"]) == 0
    narrow = compress(gpt, tmp_path / "s", prune=0.5, structured=True)
    assert json.loads((narrow / "config.json").read_text())["model"]["d_ff"] == 64
    assert genlab.load(narrow).blocks[0].mlp[0].out_features == 64


def test_int8_stays_close_to_fp32_and_is_smaller(gpt, tmp_path):
    out = compress(gpt, tmp_path / "q", quantize="int8")
    saved = load_file(out / WEIGHTS)
    assert saved["blocks.0.mlp.0.weight"].dtype == torch.int8
    assert (out / WEIGHTS).stat().st_size < 0.6 * (gpt / WEIGHTS).stat().st_size
    fp32, q = genlab.load(gpt), genlab.load(out)
    assert type(q.blocks[0].mlp[0]).__module__.startswith("torch.ao.nn.quantized")   # int8 kernels run
    a, b = _logits(fp32), _logits(q)
    rel = float((a - b).abs().max() / a.abs().max())
    assert 0 < rel < 0.05, rel   # int8, so not identical; within 5% of the logits' range
    with pytest.raises(ConfigError, match="int8 already"):
        compress(out, tmp_path / "qq", quantize="int8")
    with pytest.raises(ConfigError, match="int8, for inference only"):
        genlab.train("gpt", data="x", out=tmp_path / "t", init_from=out, **QUIET)


def test_int8_lstm_layers_stay_close_to_fp32(tmp_path):
    (tmp_path / "a.txt").write_text("def add(a, b):\n    return a + b\n\n" * 200)
    genlab.train("lstm", data=str(tmp_path / "a.txt"), out=tmp_path / "l", preset="tiny", steps=20,
                 overrides=["model.block_size=16", "train.batch_size=8"], **QUIET)
    out = compress(tmp_path / "l", tmp_path / "q", quantize="int8")
    assert load_file(out / WEIGHTS)["rnn.weight_ih_l0"].dtype == torch.int8
    fp32, q = genlab.load(tmp_path / "l"), genlab.load(out)
    assert type(q.rnn).__module__.startswith("torch.ao.nn.quantized")
    ids = torch.arange(4, 16).view(2, 6) % fp32.config.vocab_size
    with torch.no_grad():
        a, b = fp32.logits(ids)[0], q.logits(ids)[0]
    rel = float((a - b).abs().max() / a.abs().max())
    assert 0 < rel < 0.05, rel


def test_fine_tuning_a_pruned_run_keeps_its_zeros(gpt, tmp_path):
    out = compress(gpt, tmp_path / "p", prune=0.5)
    data = json.loads((gpt / "config.json").read_text())["data"]["name"]
    genlab.train("gpt", data=data, out=tmp_path / "ft", init_from=out, steps=5, overrides=["train.lr=1e-2"], **QUIET)
    before, after = genlab.load(out), genlab.load(tmp_path / "ft", ema=False)
    for (m0, n), (m1, _) in zip(prunable(before), prunable(after)):
        w0, w1 = getattr(m0, n), getattr(m1, n)
        assert torch.equal(w1[w0 == 0], torch.zeros_like(w1[w0 == 0]))
        assert not torch.equal(w0, w1)   # the rest trained


def test_cli_compress_and_its_errors(gpt, tmp_path, capsys):
    assert main(["compress", str(gpt), "--out", str(tmp_path / "c"), "--prune", "0.25", "--quantize", "int8"]) == 0
    assert "MB ->" in capsys.readouterr().out
    assert main(["compress", str(gpt), "--out", str(tmp_path / "d")]) == 1
    assert "nothing to do" in capsys.readouterr().err
    assert main(["compress", str(gpt), "--out", str(gpt), "--prune", "0.5"]) == 1


try:
    import onnxruntime  # noqa: F401
    MISSING = None
except ImportError as e:
    MISSING = f"{e.name} is not installed (pip install -e '.[test]')"


@pytest.mark.needs("onnx", MISSING)
def test_int8_onnx_export_is_verified_and_smaller(tmp_path):
    genlab.train("ddpm", data="digits", out=tmp_path / "d", preset="tiny", steps=20, **QUIET)
    from genlab.export import export

    fp32 = export(tmp_path / "d", tmp_path / "f")
    q = export(tmp_path / "d", tmp_path / "q", quantize="int8")
    assert q["quantize"] == "int8" and 0 < q["max_abs_diff"]["unet"] <= q["tolerance"]
    assert q["max_abs_diff_fp32"]["unet"] == pytest.approx(fp32["max_abs_diff"]["unet"])
    assert (tmp_path / "q" / "unet.onnx").stat().st_size < 0.6 * (tmp_path / "f" / "unet.onnx").stat().st_size


def test_an_int8_run_does_not_export_and_out_may_not_be_inside_the_source(gpt, tmp_path):
    from genlab.export import ExportError, export
    from genlab.errors import RunError

    q = compress(gpt, tmp_path / "q", quantize="int8")
    with pytest.raises(ExportError, match="export the float run"):
        export(q, tmp_path / "onnx")
    with pytest.raises(RunError, match="inside it"):
        compress(gpt, gpt / "state" / "x", prune=0.5)
