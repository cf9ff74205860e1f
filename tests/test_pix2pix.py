"""pix2pix and the image-pairs kind: the PatchGAN's receptive field, the L1 term on an identity task, seeded
dropout noise, the L1-only baseline, the built-in pairs and the folder readers, the paired metrics, `genlab sample
--input`, evaluation, ONNX export."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.cli import main
from genlab.config import DataConfig
from genlab.data.image_pairs import PairDataset, edges, grey, load_pairs, read_pair_folder
from genlab.errors import DataError, UsageError
from genlab.imageio import grid_image
from genlab.evaluation.image_metrics import l1_per_image, psnr_per_image, ssim_per_image
from genlab.models.pix2pix import PatchGAN, Pix2Pix, Pix2PixConfig, receptive_field, unet_depth


def model(**kw) -> Pix2Pix:
    torch.manual_seed(0)
    return Pix2Pix(Pix2PixConfig(**{"in_channels": 1, "out_channels": 3, "image_size": 16, "g_width": 8,
                                    "d_width": 8, **kw}))


# ---- the networks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n_layers, side", [(1, 16), (2, 34), (3, 70)])
def test_the_patchgan_sees_the_patch_its_config_says(n_layers, side):
    """The input pixels one central logit depends on (non-zero gradient) span exactly receptive_field(n)."""
    assert receptive_field(n_layers) == side
    torch.manual_seed(0)
    d = PatchGAN(2, 4, n_layers).eval()
    for m in d.modules():   # positive weights: no gradient cancels by chance inside the patch
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data.abs_()
    a = torch.zeros(1, 1, 160, 160, requires_grad=True)
    b = torch.rand(1, 1, 160, 160)
    out = d(a + 0.5, b)
    i, j = out.shape[-2] // 2, out.shape[-1] // 2
    out[0, 0, i, j].backward()
    rows = a.grad[0, 0].abs().sum(1).nonzero().flatten()
    cols = a.grad[0, 0].abs().sum(0).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side


def test_the_u_net_goes_down_to_one_pixel_and_has_skips():
    assert unet_depth(32, 8) == 5 and unet_depth(16, 8) == 4 and unet_depth(28, 8) == 2 and unet_depth(32, 3) == 3
    m = model()
    with torch.no_grad():   # cut the path through the bottleneck: the input still reaches the output by the skips
        m.generator.downs[-1][-1].weight.zero_()
    a = (torch.rand(1, 1, 16, 16) * 2 - 1).requires_grad_()
    m.generator.eval()(a).sum().backward()
    assert a.grad.abs().sum() > 0
    with pytest.raises(UsageError, match="divisible by 4"):
        model(image_size=6)


def test_the_l1_term_is_zero_for_a_perfect_output_and_training_drives_it_down_on_an_identity_task():
    m = model(out_channels=1, dropout=0.0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 16, 16, generator=g) * 2 - 1
    perfect = copy.deepcopy(m)
    perfect.generator.forward = lambda a, *masks: a
    assert perfect.loss({"a": x, "b": x})["l1"] == 0
    opt = torch.optim.Adam(m.generator.parameters(), lr=2e-3)
    first = None
    for step in range(500):
        blobs = torch.rand(16, 1, 16, 16, generator=g).round() * 2 - 1
        out = m.loss({"a": blobs, "b": blobs}, phase="g")
        loss = out["l1"] * m.config.l1_weight
        first = first if first is not None else out["l1"].item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    fresh = torch.rand(16, 1, 16, 16, generator=g).round() * 2 - 1
    end = m.sample(16, cond=fresh, generator=g)
    assert first > 0.3 and (end - fresh).abs().mean() < 0.05, (first, (end - fresh).abs().mean())


def test_dropout_is_the_seeded_noise_and_each_output_depends_on_its_own_input():
    m = model()
    m.generator.train()
    for _ in range(3):   # some running statistics, so eval-mode BatchNorm is not the identity
        m.generator(torch.rand(8, 1, 16, 16) * 2 - 1, *m.masks(8, "cpu"))
    a = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    draw = lambda seed, **kw: m.sample(3, cond=a, generator=torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))
    assert torch.equal(draw(0, dropout=0.0), draw(1, dropout=0.0))
    alone = m.sample(1, cond=a[1:2], generator=torch.Generator().manual_seed(5), dropout=0.0)
    assert torch.allclose(draw(0, dropout=0.0)[1:2], alone, atol=1e-6)
    assert draw(0).shape == (3, 3, 16, 16) and draw(0).abs().max() <= 1
    with pytest.raises(UsageError, match="pass cond= the input images"):
        m.sample(2, generator=torch.Generator())
    with pytest.raises(UsageError, match=r"expected \(2 or 1, 1, 16, 16\)"):
        m.sample(2, cond=torch.zeros(2, 3, 16, 16))


def test_the_l1_only_baseline_has_no_discriminator_and_trains_one_player():
    m = model(gan_weight=0.0)
    assert m.discriminator is None and set(m.param_groups(type("T", (), {"weight_decay": 0.0}))) == {"g"}
    batch = {"a": torch.rand(4, 1, 16, 16) * 2 - 1, "b": torch.rand(4, 3, 16, 16) * 2 - 1}
    out = m.loss(batch)
    assert set(out) == {"l1", "g_loss", "loss"} and torch.allclose(out["loss"], 100 * out["l1"])
    with pytest.raises(UsageError, match="no discriminator"):
        m.loss(batch, phase="d")
    full = model().loss(batch)
    assert {"d_loss", "g_gan", "d_real"} <= set(full)


# ---- data -------------------------------------------------------------------------------------------

def test_the_built_in_pairs_are_what_they_say():
    e = load_pairs(DataConfig(name="edges2shapes", count=40))
    assert e.a.shape == (40, 1, 32, 32) and e.b.shape == (40, 3, 32, 32) and e.num_classes == 4
    assert set(e.a.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(e.a, edges(e.b))
    gb = grey(e.b)   # edges lie where the shape changes: the grey image's local range is large there
    local = torch.nn.functional.max_pool2d(gb, 3, 1, 1) + torch.nn.functional.max_pool2d(-gb, 3, 1, 1)
    assert local[e.a > 0].mean() > 3 * local[e.a < 0].mean()
    c = load_pairs(DataConfig(name="colorize-shapes", count=40))
    assert torch.allclose(c.a, (c.b * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True))
    h = load_pairs(DataConfig(name="inpaint-digits"))
    hidden = h.a != h.b
    assert (h.a[hidden] == 0).all() and h.b.shape == (1797, 1, 32, 32)
    per_image = (h.a == 0).flatten(1).sum(1)
    assert (per_image >= 16 * 16).all()   # a 16x16 square (half the side) in every image
    d = load_pairs(DataConfig(name="edges2digits", direction="BtoA"))
    assert d.a.shape == (1797, 1, 32, 32) and len(d.a.unique()) > 2   # turned around: the digits are the inputs
    with pytest.raises(DataError, match="expected AtoB"):
        load_pairs(DataConfig(name="edges2digits", direction="sideways"))
    with pytest.raises(DataError, match="not a built-in"):
        load_pairs(DataConfig(name="nowhere"))


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_the_folder_layouts_read_as_pairs(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (3, 8, 8), dtype=np.uint8)
    b = rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    for i, name in enumerate(["x.png", "y.png", "z.png"]):
        _png(tmp_path / "ab" / "A" / name, a[i])
        _png(tmp_path / "ab" / "B" / name, b[i])
        _png(tmp_path / "side" / name, np.concatenate([np.repeat(a[i][:, :, None], 3, 2), b[i]], 1))
    ds = read_pair_folder(tmp_path / "ab")
    assert ds.a.shape == (3, 1, 8, 8) and ds.b.shape == (3, 3, 8, 8)
    assert torch.equal(((ds.a[1, 0] + 1) * 127.5).round().to(torch.uint8), torch.from_numpy(a[1]))
    side = read_pair_folder(tmp_path / "side")
    assert side.a.shape == (3, 3, 8, 8) and torch.equal(side.b, ds.b)
    assert read_pair_folder(tmp_path / "ab", image_size=16).a.shape == (3, 1, 16, 16)
    _png(tmp_path / "ab" / "A" / "lonely.png", a[0])
    with pytest.raises(DataError, match="first: A/lonely.png"):
        read_pair_folder(tmp_path / "ab")
    _png(tmp_path / "side" / "odd.png", b[0])
    with pytest.raises(DataError, match="odd.png: 8x8 is not two square images side by side"):
        read_pair_folder(tmp_path / "side")


def test_paired_metrics():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    noisier = (x + 0.6 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert np.allclose(ssim_per_image(x, x), 1) and np.allclose(psnr_per_image(x, x), 100) and (l1_per_image(x, x) == 0).all()
    assert (ssim_per_image(x, noisy) > ssim_per_image(x, noisier)).all()
    assert np.allclose(ssim_per_image(x, noisy), ssim_per_image(noisy, x))
    mse = (((x + 1) / 2 - (noisy + 1) / 2) ** 2).flatten(1).mean(1).double()
    assert np.allclose(psnr_per_image(noisy, x), (10 * torch.log10(1 / mse)).numpy())
    assert np.allclose(l1_per_image(-torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4)), 1)


# ---- a trained run: sample, eval, export ---------------------------------------------------------------

def test_sample_translates_an_image_a_folder_or_the_held_out_inputs(pair_run, tmp_path, capsys):
    ds = load_pairs(DataConfig(name="edges2digits", image_size=16))
    for i in range(3):
        _png(tmp_path / "in" / f"e{i}.png", ((ds.a[i, 0] + 1) * 127.5).round().byte().numpy())
    assert main(["sample", str(pair_run), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out") + "/"]) == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["e0.png", "e1.png", "e2.png"]
    with Image.open(tmp_path / "out" / "e1.png") as im:
        assert im.size == (16, 16) and im.text["genlab:seed"] == "0" and "pix2pix" in im.text["genlab:family"]
    model = genlab.load(pair_run)
    want = model.sample(3, cond=ds.a[:3], generator=torch.Generator().manual_seed(0))
    with Image.open(tmp_path / "out" / "e1.png") as im:
        got = torch.from_numpy(np.array(im.convert("L"))).float() / 127.5 - 1
    assert (got - want[1, 0]).abs().max() < 2 / 255 + 1e-6   # the translation, as uint8
    assert main(["sample", str(pair_run), "-n", "5", "--out", str(tmp_path / "held.png")]) == 0
    with Image.open(tmp_path / "held.png") as im:   # 5 rows of input | output | target
        w, h = im.size
        assert abs(h / w - 5 / 3) < 0.1
    assert main(["sample", str(pair_run), "--label", "1"]) == 1
    assert "take --input, not a label" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_scores_the_translations_against_targets_and_the_judge(pair_run, monkeypatch):
    import genlab.kinds.image.judge as J

    monkeypatch.setitem(J.JUDGE_STEPS, "classifier", 300)   # a quicker judge of the targets (this test's own)
    report = genlab.evaluate(pair_run, progress=False, log=lambda _: None)
    rows = {r["metric"]: r for r in report["rows"]}
    assert {"l1", "psnr", "ssim", "fid", "kid", "precision", "recall", "coverage", "fcn_score", "memorisation"} <= set(rows)
    assert 0 < rows["l1"]["value"] < 1 and 0 < rows["ssim"]["value"] < 1 and rows["psnr"]["value"] > 3
    assert rows["fcn_score"]["floor"] > 0.9 and rows["fid"]["floor"] < rows["fid"]["value"]
    assert rows["l1"]["axis"] == "fidelity" and rows["l1"]["n_samples"] == 180
    assert json.loads((pair_run / "eval.json").read_text())["family"] == "pix2pix"


def test_the_generator_exports_and_the_onnx_backend_translates_like_torch(tmp_path):
    from genlab.export import export, onnx_backend
    from genlab.export.onnx import TOLERANCE

    m = model()
    m.generator.train()
    m.generator(torch.rand(8, 1, 16, 16) * 2 - 1, *m.masks(8, "cpu"))
    m.eval()
    manifest = export(m, tmp_path / "onnx")
    assert manifest["max_abs_diff"]["generator"] <= TOLERANCE
    assert [i["name"] for i in manifest["graphs"]["generator"]["inputs"]] == ["a", "mask0", "mask1", "mask2"]
    assert manifest["dropout"]["rate"] == 0.5
    fast = onnx_backend(copy.deepcopy(m), tmp_path / "onnx")
    with torch.no_grad():
        for p in fast.generator.parameters():   # the torch U-Net left behind must not matter
            p.zero_()
    a = torch.rand(3, 1, 16, 16) * 2 - 1
    x, y = (k.sample(3, cond=a, generator=torch.Generator().manual_seed(4)) for k in (m, fast))
    assert (x - y).abs().max() <= TOLERANCE and x.std() > 1e-3


def test_a_pair_dataset_refuses_mismatched_sizes():
    with pytest.raises(DataError, match="expected square images of one size"):
        PairDataset(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 16, 16))


class ExplodingPix2Pix(Pix2Pix):
    """A pix2pix whose discriminator's or generator's loss (`player`) turns NaN at step 16."""

    player, calls = "d", 0

    def loss(self, batch, phase=None):
        out = super().loss(batch, phase)
        if self.training and phase == self.player:
            ExplodingPix2Pix.calls += 1
            if ExplodingPix2Pix.calls > 15:
                key = "d_loss" if phase == "d" else "g_loss"
                out[key] = out[key] * float("nan")
                out["loss"] = out[key]
        return out


@pytest.mark.parametrize("player", ["d", "g"])
def test_nan_in_either_players_loss_stops_and_keeps_the_last_good_checkpoint(player, tmp_path, monkeypatch):
    from genlab.errors import TrainingDiverged
    from genlab.kinds import prepare
    from genlab.runs import load_weights
    from genlab.training.run import build_config
    from genlab.training.trainer import fit

    monkeypatch.setattr(ExplodingPix2Pix, "player", player)
    monkeypatch.setattr(ExplodingPix2Pix, "calls", 0)
    cfg = build_config("pix2pix", data="edges2digits", preset="tiny", steps=40,
                       overrides=["train.ckpt_every=10", "train.val_every=1000", "train.sample_every=1000",
                                  "data.image_size=16", "train.batch_size=8", "train.precision=bf16"])
    prep = prepare(cfg, tmp_path, resume=False)
    with pytest.raises(TrainingDiverged, match=f"the loss of group '{player}' became nan at step 16"):
        fit(cfg, ExplodingPix2Pix(cfg.model), prep.make_loader, prep.val_batches, tmp_path, progress=False)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 10
    weights, _ = load_weights(tmp_path)
    assert {k.split(".")[0] for k in weights} == {"generator", "discriminator"}
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def _b64_png(array: np.ndarray) -> str:
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_the_image2image_route_translates_an_upload_as_genlab_sample_does(pair_run):
    import base64
    import io

    import httpx
    from serve_util import running_server

    ds = load_pairs(DataConfig(name="edges2digits", image_size=16))
    edge = ((ds.a[7, 0] + 1) * 127.5).round().byte().numpy()
    big = np.kron(edge, np.ones((4, 4), np.uint8))              # 64x64: the server resizes it to the model's 16
    model = genlab.load(pair_run)
    want = model.sample(2, cond=ds.a[7:8], generator=torch.Generator().manual_seed(3))
    with running_server([pair_run]) as base:
        url = f"{base}/v1/models/pix2pix/image2image"
        info = httpx.get(f"{base}/v1/models").json()["models"][0]
        assert info["routes"] == ["image2image"] and info["conditioning"] == "image"
        r = httpx.post(url, json={"image": "data:image/png;base64," + _b64_png(edge), "n": 2, "seed": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["provenance"]["AI-Generated"] == "true" and body["provenance"]["genlab:seed"] == "3"
        with Image.open(io.BytesIO(base64.b64decode(body["png"]))) as im:
            got = np.array(im.convert("L")).astype(np.float64)
        expected = grid_image(want, nrow=2)[..., 0].astype(np.float64)   # two translations side by side
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1
        resized = httpx.post(url, json={"image": _b64_png(big), "seed": 3}, headers={"Accept": "image/png"})
        assert resized.status_code == 200 and resized.headers["content-type"] == "image/png"
        assert resized.headers["X-AI-Generated"] == "true"
        bad = httpx.post(url, json={"image": "not base64!"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "image"]
        junk = httpx.post(url, json={"image": base64.b64encode(b"GIF89a....").decode()})
        assert junk.status_code == 422 and "not a readable PNG or JPEG" in junk.text
        assert httpx.post(url, json={"image": _b64_png(edge), "dropout": 2}).status_code == 422
        assert httpx.post(url, json={"image": _b64_png(edge), "n": 1000}).status_code == 422


def test_each_players_step_moves_only_its_own_network():
    """(The contract suite leaves multi-optimizer families to their own file.) D's step leaves G's gradients
    empty; G's step, with D frozen, leaves D's."""
    m = model()
    opts = {k: torch.optim.Adam(g["params"], lr=1e-3) for k, g in m.param_groups(type("T", (), {"weight_decay": 0.0})).items()}
    seen = {}

    class Recording:
        def forward(self, batch, **kw):
            return m(batch, **kw)

        def step(self, group, out):
            out["loss"].backward()
            seen[group] = {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
                           for name, net in (("d", m.discriminator), ("g", m.generator))}
            opts[group].step()
            opts[group].zero_grad(set_to_none=True)

    batch = {"a": torch.rand(4, 1, 16, 16) * 2 - 1, "b": torch.rand(4, 3, 16, 16) * 2 - 1}
    out = m.train_step(batch, Recording())
    assert seen == {"d": {"d": True, "g": False}, "g": {"d": False, "g": True}}
    assert all(p.requires_grad for p in m.discriminator.parameters()) and torch.isfinite(out["loss"])
