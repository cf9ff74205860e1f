"""Latent diffusion (`ldm`): the latent's shape and range, the stop-gradient between the two stages, sampling
through the decoder, a short run that learns to reconstruct, and ONNX export of both networks."""

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import genlab
from genlab.cli import main
from genlab.config import TrainConfig
from genlab.data.sources import split_images
from genlab.errors import ConfigError, UsageError
from genlab.models.base import NoiseParts
from genlab.models.latent_diffusion import LDM, LDMConfig
from genlab.runs import read_metrics
from test_contract import SimpleStepper


def model(**kw) -> LDM:
    torch.manual_seed(0)
    return LDM(LDMConfig(**{"in_channels": 3, "image_size": 16, "num_classes": 4, "ae_width": 8, "width": 16,
                            "num_res_blocks": 1, "attn_resolutions": [], "timesteps": 50, **kw}))


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_latent_is_f_times_smaller_and_bounded():
    for halvings, side in ((1, 8), (2, 4), (3, 2)):
        m = model(ae_halvings=halvings, latent_channels=5)
        z = m.encode(images() * 10)      # far outside [-1, 1]: tanh still bounds the latent
        assert z.shape == (6, 5, side, side) and m.item_shape() == (5, side, side)
        assert z.abs().max() < 1
        assert m.unet.conv_in.in_channels == 5 and m.decode_latent(z).shape == (6, 3, 16, 16)
    with pytest.raises(UsageError, match="image_size divisible by 2 \\*\\* ae_halvings.*image_size=12"):
        model(image_size=12, ae_halvings=3)
    with pytest.raises(UsageError, match="latent_noise=-0.1"):
        model(latent_noise=-0.1)


def test_the_diffusion_loss_never_reaches_the_autoencoder():
    """The encoder's gradient from the whole loss is the reconstruction term's alone (the diffusion learns on
    detached latents); the U-Net gets the diffusion term's."""
    m = model()
    batch = {"x": images(), "y": torch.arange(6) % 4}
    enc = list(m.encoder.parameters())
    torch.manual_seed(1)
    out = m.loss(batch)
    whole = torch.autograd.grad(out["loss"], enc)
    torch.manual_seed(1)                 # the same noise on the latents the decoder learns on (drawn first)
    z = m.encode(batch["x"])
    recon = F.l1_loss(m.decoder(z + m.config.latent_noise * torch.randn_like(z)), batch["x"])
    alone = torch.autograd.grad(recon, enc)
    assert torch.allclose(recon, out["recon_l1"])
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(whole, alone))
    unet = torch.autograd.grad(m.loss(batch)["loss"], list(m.unet.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in unet)


def test_the_autoencoder_trains_for_ae_steps_then_freezes_while_the_u_net_goes_on():
    m = model(ae_steps=3)
    stepper, batch = SimpleStepper(m, TrainConfig()), {"x": images(), "y": torch.arange(6) % 4}
    assert set(stepper.opts) == {"main", "autoencoder"}
    snap = lambda mod: [p.detach().clone() for p in mod.parameters()]  # noqa: E731
    moved = lambda mod, before: any(not torch.equal(p, q) for p, q in zip(mod.parameters(), before))  # noqa: E731
    logs = []
    for step in range(6):
        ae, unet = snap(m.encoder) + snap(m.decoder), snap(m.unet)
        logs.append(m.train_step(batch, stepper))
        assert moved(m.unet, unet)
        assert moved(m.encoder, ae[:len(list(m.encoder.parameters()))]) == (step < 3), step
    assert int(m.ae_step) == 3 and not m.first_stage
    assert ["recon_l1" in row for row in logs] == [True] * 3 + [False] * 3
    assert all(torch.isfinite(row["loss"]) for row in logs)


def test_with_gradient_accumulation_the_first_stage_counts_optimizer_steps(tmp_path):
    """ae_steps 3 with two micro-batches a step: the autoencoder takes 3 optimizer steps, the U-Net 6, and only
    the first 3 rows log a reconstruction and the autoencoder's gradient norm."""
    run = genlab.train("ldm", data="shapes", out=tmp_path / "run", preset="tiny", steps=6, progress=False,
                       overrides=["data.count=64", "data.image_size=16", "data.conditional=true", "train.batch_size=8",
                                  "train.accum_steps=2", "model.ae_steps=3", "model.timesteps=50", "train.log_every=1",
                                  "train.val_every=100000", "train.sample_every=100000"], log=lambda s: None)
    assert int(genlab.load(run.path, device="cpu").ae_step) == 3
    state = load_file(run.path / "state" / "optimizer.safetensors")
    steps = {k.split("/")[0]: int(v) for k, v in state.items() if k.endswith("/step")}
    assert steps == {"autoencoder": 3, "main": 6}
    rows = [r for r in read_metrics(run.path) if "train/loss" in r]
    assert [("train/recon_l1" in r, "grad_norm/autoencoder" in r) for r in rows] == [(True, True)] * 3 + [(False, False)] * 3
    assert all(r["train/loss"] > r["train/mse"] for r in rows[:3]) and all(r["train/loss"] == r["train/mse"] for r in rows[3:])


def test_sampling_denoises_a_latent_and_decodes_it():
    m = model().eval()
    g = torch.Generator().manual_seed(0)
    x_T = m.latent(3, g)
    assert x_T.shape == (3, *m.item_shape())
    a = m.sample(3, cond=[0, 1, 2], steps=4, x_T=x_T)
    assert a.shape == (3, 3, 16, 16) and a.abs().max() <= 1
    latents = super(LDM, m).sample(3, cond=[0, 1, 2], steps=4, x_T=x_T)   # DDPM.sample: the latents
    assert torch.equal(a, m.decode_latent(latents))
    assert torch.equal(m.decode(x_T), m.sample(3, x_T=x_T, steps=m.config.timesteps))


def test_requests_batched_together_get_their_samples_alone():
    """What the server's dynamic batching relies on: a NoiseParts generator draws each request's noise from its own
    seed, so a merged batch decodes to each request's images alone (eta > 0: fresh noise at every step)."""
    m = model().eval()
    kw = {"steps": 4, "eta": 0.5, "guidance": 2.0}
    parts = [(2, 1, 0), (3, 2, 3)]   # (rows, seed, label)
    merged = m.sample(5, cond=[0, 0, 3, 3, 3], **kw,
                      generator=NoiseParts([(n, torch.Generator().manual_seed(s)) for n, s, _ in parts]))
    alone = [m.sample(n, cond=y, generator=torch.Generator().manual_seed(s), **kw) for n, s, y in parts]
    assert torch.allclose(merged, torch.cat(alone), atol=1e-5)
    assert not torch.allclose(alone[0][0], alone[1][0], atol=1e-3)


def test_a_short_run_learns_to_reconstruct_held_out_shapes(tmp_path, capsys):
    """160 steps on 16x16 shapes (about 20 s), the autoencoder frozen after 120: held-out reconstructions beat the
    mean image by far, `genlab reconstruct` shows them, and sampling gives images of the data's shape."""
    run = genlab.train("ldm", data="shapes", out=tmp_path / "run", preset="tiny", steps=160, progress=False,
                       overrides=["data.count=600", "data.image_size=16", "data.conditional=true", "model.ae_steps=120",
                                  "train.val_every=60", "train.sample_every=100000", "model.timesteps=50"],
                       log=lambda s: None)
    m = genlab.load(run.path, device="cpu")
    assert int(m.ae_step) == 120
    _, _, val = split_images(m.run.config.data)
    x = val.images[:64]
    with torch.no_grad():
        rec = (m.reconstruct(x) - x).abs().mean()
    mean_image = (x.mean(0, keepdim=True) - x).abs().mean()
    assert rec < 0.5 * mean_image, (float(rec), float(mean_image))
    assert main(["reconstruct", str(run.path), "-n", "8", "--out", str(tmp_path / "rec.png")]) == 0
    assert (tmp_path / "rec.png").exists()
    s = m.sample(4, cond=[0, 1, 2, 3], steps=5, guidance=2.0, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 3, 16, 16) and s.std() > 0.05


def test_a_config_that_cannot_build_is_a_config_error(tmp_path):
    from genlab.registry import build, model_config

    cfg = model_config("ldm", "tiny", in_channels=3, image_size=20, ae_halvings=3)
    with pytest.raises(ConfigError, match="the model config: ldm needs"):
        build("ldm", cfg)


def test_both_networks_export_and_the_onnx_backend_samples_like_torch(tmp_path):
    from genlab.export import export, onnx_backend
    from genlab.export.onnx import TOLERANCE

    pytest.importorskip("onnxruntime")
    m = model()
    with torch.no_grad():   # wake the zero-initialised output layers, so a mismatch cannot hide
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    manifest = export(m, tmp_path / "onnx")
    assert set(manifest["graphs"]) == {"unet", "decoder"}
    assert max(manifest["max_abs_diff"].values()) <= TOLERANCE
    assert manifest["graphs"]["unet"]["inputs"][0]["shape"] == ["batch", 4, 4, 4]
    assert manifest["latent_space"] == {"shape": [4, 4, 4], "range": [-1.0, 1.0],
                                        "decoder": "decoder.onnx turns the denoised latents into images"}
    fast = onnx_backend(copy.deepcopy(m), tmp_path / "onnx")
    with torch.no_grad():
        for p in fast.parameters():   # what is left of the torch networks: the samples must not depend on it
            p.zero_()
    kw = {"cond": [0, 1, 3], "steps": 3, "guidance": 2.0}
    a, b = (x.sample(3, generator=torch.Generator().manual_seed(1), **kw) for x in (m, fast))
    assert (a - b).abs().max() <= TOLERANCE and a.std() > 1e-3
