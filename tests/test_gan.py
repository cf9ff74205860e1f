"""GAN family: shapes, the two-player step, losses, projection discriminator, spectral norm, truncation and
the mode-collapse watch."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize

from players_util import RecordingStepper, TrainStub

from genlab.config import RunConfig, apply_preset, from_dict
from genlab.models.gan import GAN, PRESETS, GANConfig


def make(channels=1, size=8, classes=0, **kw) -> GAN:
    kw = {"g_width": 8, "d_width": 8, "latent_dim": 16, **kw}
    torch.manual_seed(0)
    return GAN(GANConfig(in_channels=channels, image_size=size, num_classes=classes, **kw))


def batch(n=8, channels=1, size=8, classes=0) -> dict:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, channels, size, size, generator=g) * 2 - 1
    y = torch.randint(classes, (n,), generator=g) if classes else None
    return {"x": x, "y": y}


def has_grad(grads: list) -> bool:
    return any(g is not None and g.abs().sum() > 0 for g in grads)


def no_grad(grads: list) -> bool:
    return all(g is None or g.abs().sum() == 0 for g in grads)


@pytest.mark.parametrize("channels,size,classes,start", [
    (1, 8, 0, 4), (1, 8, 10, 4), (1, 28, 0, 7), (1, 28, 10, 7), (3, 32, 0, 4), (3, 32, 5, 4), (3, 12, 0, 3)])
def test_shapes(channels, size, classes, start):
    m = make(channels, size, classes)
    assert m.generator.s0 == start
    b = batch(4, channels, size, classes)
    assert m.discriminator(b["x"], b["y"]).shape == (4,)
    out = m.loss(b)
    assert {"loss", "d_loss", "g_loss", "d_real", "d_fake"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    cond = 1 if classes else None
    images = m.sample(5, cond=cond, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1
    z = m.latent(3, torch.Generator().manual_seed(0))
    assert z.shape == (3, 16)
    assert m.decode(z, torch.zeros(3, dtype=torch.long) if classes else None).shape == (3, channels, size, size)
    if classes:  # a conditional model without cond draws labels itself; an unconditional one refuses labels
        assert m.sample(2).shape == (2, channels, size, size)
        with pytest.raises(ValueError, match="conditional"):
            m.loss({"x": b["x"], "y": None})
    else:
        with pytest.raises(ValueError, match="without labels"):
            m.sample(2, cond=1)


def test_sample_is_seeded_and_eval_mode():
    m = make(classes=3)
    m.train()
    running = m.generator.net[0].running_mean.clone()
    a = m.sample(6, cond=[0, 1, 2, 0, 1, 2], generator=torch.Generator().manual_seed(7))
    b = m.sample(6, cond=[0, 1, 2, 0, 1, 2], generator=torch.Generator().manual_seed(7))
    c = m.sample(6, cond=[0, 1, 2, 0, 1, 2], generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # each image depends on its own latent only (eval-mode BatchNorm), and sampling leaves G's state alone
    one = m.sample(1, cond=0, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(one[0], a[0], atol=1e-6)
    assert m.generator.training and torch.equal(m.generator.net[0].running_mean, running)
    with pytest.raises(TypeError, match="temperature"):
        m.sample(2, temperature=0.5)


def test_truncation_keeps_latents_within_threshold():
    m = make()
    z = m.latent(4000, torch.Generator().manual_seed(0), truncation=0.5)
    assert z.abs().max() <= 0.5
    assert 0.2 < z.std() < 0.35  # a truncated normal on [-0.5, 0.5] (std 0.28), not zeros or a clamp
    assert (z.abs() == 0.5).float().mean() < 0.01
    again = m.latent(4000, torch.Generator().manual_seed(0), truncation=0.5)
    assert torch.equal(z, again)
    full = m.latent(4000, torch.Generator().manual_seed(0))
    assert full.abs().max() > 2
    a = m.sample(4, generator=torch.Generator().manual_seed(3), truncation=0.5)
    assert torch.equal(a, m.sample(4, generator=torch.Generator().manual_seed(3), truncation=0.5))
    with pytest.raises(ValueError, match="truncation"):
        m.latent(2, truncation=0.0)


@pytest.mark.parametrize("loss,sn,classes", [("bce", True, 0), ("hinge", True, 3), ("bce", False, 3),
                                             ("hinge", False, 0)])
def test_train_step_updates_each_player_with_its_own_loss(loss, sn, classes):
    m = make(classes=classes, loss=loss, spectral_norm=sn)
    m.train()
    stepper = RecordingStepper(m)
    torch.manual_seed(0)
    out = m.train_step(batch(8, classes=classes), stepper)
    assert {"loss", "d_loss", "g_loss", "d_real", "d_fake"} <= set(out)
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.values())
    assert torch.equal(out["loss"], out["g_loss"])
    d_phase, g_phase = stepper.seen["d"], stepper.seen["g"]
    assert has_grad(d_phase["d"]) and all(g is None for g in d_phase["g"])   # D's step: G untouched
    assert has_grad(g_phase["g"]) and no_grad(g_phase["d"])                   # G's step: D frozen
    assert all(g is not None for g in g_phase["g"])
    assert all(p.requires_grad for p in m.discriminator.parameters())         # unfrozen afterwards


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    bce, hinge = make(loss="bce"), make(loss="hinge")
    sig = torch.sigmoid
    expect_d = -(torch.log(sig(real)).mean() + torch.log(1 - sig(fake)).mean())
    assert torch.allclose(bce.d_loss(real, fake), expect_d)
    assert torch.allclose(bce.g_loss(fake), -torch.log(sig(fake)).mean())           # non-saturating
    assert torch.allclose(hinge.d_loss(real, fake), torch.tensor((0 + 2) / 2 + (1.5 + 0) / 2))
    assert torch.allclose(hinge.g_loss(fake), torch.tensor(1.25))
    with pytest.raises(ValueError, match="model.loss"):
        make(loss="wgan")


def test_validation_loss_sums_both_players():
    m = make(classes=4, spectral_norm=False)
    m.eval()
    with torch.no_grad():
        out = m.loss(batch(8, classes=4))
    assert torch.allclose(out["loss"], out["d_loss"] + out["g_loss"])
    assert 0 < out["d_real"] < 1 and 0 < out["d_fake"] < 1


@pytest.mark.parametrize("loss,sn", [("bce", True), ("hinge", False)])
def test_discriminator_moves_the_right_way(loss, sn):
    """With G frozen, a few D steps raise D(real) and lower D(fake)."""
    m = make(loss=loss, spectral_norm=sn)
    m.train()
    x = -torch.ones(16, 1, 8, 8)
    x[:, :, 2:6, 2:6] = 1.0  # "real" images: a bright square
    b = {"x": x, "y": None}
    opt = torch.optim.Adam(m.discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))

    def probe() -> dict:
        torch.manual_seed(123)
        with torch.no_grad():
            return m.loss(b, phase="d")

    before = probe()
    for _ in range(10):
        out = m.loss(b, phase="d")
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    after = probe()
    assert after["d_real"] > before["d_real"] + 0.05
    assert after["d_fake"] < before["d_fake"] - 0.05
    assert after["d_loss"] < before["d_loss"]


def test_projection_discriminator_depends_on_label():
    m = make(classes=3, spectral_norm=True)
    d = m.discriminator.eval()
    x = batch(4)["x"]
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        gap = d(x, y1) - d(x, y0)
        phi = d.phi(x)
        expected = ((d.embed.weight[1] - d.embed.weight[0]) * phi).sum(1)  # logit = psi(phi) + <embed(y), phi>
    assert gap.abs().min() > 0
    assert torch.allclose(gap, expected, atol=1e-5)
    assert make().discriminator.embed is None


def test_watch_flags_collapse_and_survives_state_dict():
    m = make(classes=2)
    assert torch.equal(m.watch_y[:4], torch.tensor([0, 1, 0, 1]))
    assert torch.equal(m.watch_z, make(classes=2).watch_z)  # fixed latents, independent of the global RNG
    m.train()
    stats, warning = m.watch(torch.Generator().manual_seed(0))
    assert warning is None and stats["diversity"] > 0
    assert m.watch(None)[1] is None                        # still at init: no warning
    assert m.generator.training
    healthy = stats["diversity"]
    # the trainer calls watch() between swapping EMA weights in and restoring the saved state: the reference stays
    other = make(classes=2)
    saved = {k: v.clone() for k, v in other.state_dict().items()}
    assert saved["watch_ref"] == 0
    other.watch(None)
    other.load_state_dict(saved)
    assert math.isclose(other.watch_ref.item(), healthy, rel_tol=1e-6)
    last = m.generator.net[-2]                             # the final conv before tanh
    with torch.no_grad():
        last.weight.zero_()                                # every image = tanh(bias): collapse
    stats, warning = m.watch(None)
    assert stats["diversity"] < 1e-6 and "mode collapse" in warning
    assert math.isclose(m.watch_ref.item(), healthy, rel_tol=1e-6)
    fresh = make(classes=2)
    fresh.load_state_dict(m.state_dict())
    assert "mode collapse" in fresh.watch(None)[1]         # the reference came back with the weights


def test_spectral_norm_bounds_discriminator_weights():
    m = make(channels=3, size=16, classes=3, spectral_norm=True)
    d = m.discriminator.train()
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in d.modules())
    b = batch(4, 3, 16, 3)
    for _ in range(3):
        d(b["x"], b["y"])
    layers = [mod for mod in d.modules() if parametrize.is_parametrized(mod, "weight")]
    assert len(layers) == 5  # first conv, two strided convs, psi, embed
    for mod in layers:
        w = mod.weight.detach()
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
        assert abs(sigma - 1) < 0.05, (mod, sigma)
    plain = make(channels=3, size=16, spectral_norm=False).discriminator
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in plain.modules())
    assert not any(parametrize.is_parametrized(mod) for mod in plain.modules())


def test_param_groups_split_the_players():
    m = make(classes=3, lr_g=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.9)
    groups = m.param_groups(TrainStub())
    assert set(groups) == {"d", "g"}
    assert groups["d"]["lr"] == 4e-4 and groups["g"]["lr"] == 1e-4 and groups["g"]["betas"] == (0.0, 0.9)
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    assert {id(p) for p in groups["d"]["params"]} == {id(p) for p in m.discriminator.parameters()}


def test_presets_are_valid_keys():
    for name in PRESETS:
        cfg = apply_preset(RunConfig(family="gan", model=GANConfig()), PRESETS, name)
        assert cfg.train.grad_clip == 0.0
        GAN(cfg.model)


def test_mode_seeking_pairs_latents_under_one_label_and_adds_its_term_to_g_loss():
    """model.mode_seeking = w: G's loss = the adversarial loss on fakes whose second half repeats the first half's
    labels, + w / (mean |G(z1, y) - G(z2, y)| / mean |z1 - z2| + 1e-5) (MSGAN); D's phase and w = 0 are untouched."""
    m, b = make(classes=3, mode_seeking=2.0), batch(9, classes=3)
    seen = []
    forward = m.generator.forward
    m.generator.forward = lambda z, y=None: seen.append((z.clone(), y.clone())) or forward(z, y)
    torch.manual_seed(5)
    out = m.loss(b, phase="g")
    (z, y), = seen
    assert torch.equal(y, torch.cat([b["y"][:4], b["y"][:4], b["y"][8:]]))
    with torch.no_grad():
        m.generator.train()
        torch.manual_seed(5)
        fake = forward(torch.randn(9, 16), y)
        ratio = (fake[:4] - fake[4:8]).abs().mean() / (z[:4] - z[4:8]).abs().mean()
        adversarial = m.g_loss(m.discriminator(fake, y))
    assert torch.allclose(out["mode_ratio"], ratio)
    assert torch.allclose(out["g_loss"], adversarial + 2.0 / (ratio + 1e-5))
    seen.clear()
    m.loss(b, phase="d")
    assert torch.equal(seen[0][1], b["y"])                  # D's phase keeps the batch's labels
    plain = make(classes=3, mode_seeking=0.0)
    assert "mode_ratio" not in plain.loss(b, phase="g")
    assert GANConfig().mode_seeking == 0.1                              # new runs have it
    assert from_dict(GANConfig, {"num_classes": 3}).mode_seeking == 0.0   # a run's config.json without it
    with pytest.raises(ValueError, match="mode_seeking"):
        make(mode_seeking=-1.0)


def test_mode_seeking_spreads_a_generator_that_ignores_its_latent():
    """A class-conditional G whose latent barely reaches the image (every seed of a label the same image, the
    collapse issue 16 saw) is pushed apart by the mode-seeking term alone: a few G steps raise the spread among
    samples of one label, and steps without the term do not."""

    def spread_after(weight: float) -> tuple[float, float]:
        m = make(classes=2, mode_seeking=weight)
        with torch.no_grad():
            m.generator.fc.weight[:, :16] *= 1e-3        # the columns that read z
        opt = torch.optim.Adam(m.generator.parameters(), lr=1e-2)
        z = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
        before = m.decode(z, torch.zeros(16, dtype=torch.long)).std(0).mean().item()
        torch.manual_seed(0)
        for _ in range(20):
            out = m.loss(batch(16, classes=2), phase="g")
            opt.zero_grad()
            out["g_loss"].backward()
            opt.step()
        return before, m.decode(z, torch.zeros(16, dtype=torch.long)).std(0).mean().item()

    before, after = spread_after(1.0)
    assert before < 1e-4 and after > 0.05
    _, without = spread_after(0.0)
    assert without < 0.3 * after


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_convolutions_run_channels_last_with_the_numbers_of_the_usual_layout(spectral_norm):
    """The layout is a speed choice only (benchmarks/RESULTS.md, issue 16): the weights and maps are NHWC, the
    samples come out (N, C, H, W)-contiguous, and a copy of the model laid out as usual computes the same."""
    model = make(channels=3, size=16, classes=3, spectral_norm=spectral_norm).eval()
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    nchw = make(channels=3, size=16, classes=3, spectral_norm=spectral_norm).eval()
    nchw.load_state_dict(model.state_dict())
    nchw.to(memory_format=torch.contiguous_format)
    assert not nchw.generator.net[2].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        images = model.decode(z, y)
        assert images.is_contiguous()
        assert torch.allclose(images, nchw.decode(z, y), atol=1e-5)
        x = torch.rand(4, 3, 16, 16) * 2 - 1
        assert torch.allclose(model.discriminator(x, y), nchw.discriminator(x, y), atol=1e-5)
