"""WaveGAN family: phase shuffle, the exact output length, the projection discriminator, the losses and the
gradient penalty, the two-player step, the mode-collapse watch, ONNX export, and a toy of two tones whose
generated clips follow their labels."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from players_util import RecordingStepper, TrainStub

from genlab.config import RunConfig, apply_preset
from genlab.models.wavegan import PRESETS, PhaseShuffle, WaveGAN, WaveGANConfig, n_upsamples

try:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    MISSING = None
except ImportError as e:
    MISSING = f"{e.name} is not installed (pip install -e '.[test]')"


def make(length=256, classes=0, **kw) -> WaveGAN:
    kw = {"g_width": 4, "d_width": 4, "latent_dim": 8, "label_dim": 4, **kw}
    torch.manual_seed(0)
    return WaveGAN(WaveGANConfig(sample_rate=length, length=length, num_classes=classes, **kw))


def clips(n=8, length=256, classes=0) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"x": torch.rand(n, 1, length, generator=g) * 2 - 1,
            "y": torch.randint(classes, (n,), generator=g) if classes else None}


# ---- phase shuffle ---------------------------------------------------------------------------------


def shifted(x: torch.Tensor, s: int) -> torch.Tensor:
    """x (C, L) moved by s samples, out[t] = x[t - s], reflected at the ends (x[-i] = x[i], x[L-1+i] = x[L-1-i])."""
    length = x.shape[-1]
    t = torch.arange(length) - s
    t = torch.where(t < 0, -t, torch.where(t >= length, 2 * (length - 1) - t, t))
    return x[:, t]


def test_phase_shuffle_moves_each_example_by_its_own_shift_and_keeps_its_values():
    n, length = 2, 50
    x = torch.randn(64, 3, length)
    shuffle = PhaseShuffle(n).train()
    torch.manual_seed(0)
    out = shuffle(x)
    shifts = []
    for xb, ob in zip(x, out):
        # away from the reflected borders, each example is its input moved by one s in [-n, n], in every channel:
        # the same multiset of values
        matches = [s for s in range(-n, n + 1) if torch.equal(ob[:, n:length - n], xb[:, n - s:length - n - s])]
        assert len(matches) == 1
        s = matches[0]
        assert torch.equal(ob[:, n:length - n].sort().values, xb[:, n - s:length - n - s].sort().values)
        assert torch.equal(ob, shifted(xb, s))          # and the uncovered samples are reflections
        shifts.append(s)
    assert set(shifts) == set(range(-n, n + 1))         # one shift per example, not one per batch
    torch.manual_seed(0)
    assert torch.equal(shuffle(x), out)                 # the global RNG (seeded by the trainer) decides
    assert torch.equal(shuffle.eval()(x), x)            # the identity in eval mode
    assert torch.equal(PhaseShuffle(0).train()(x), x)   # and at n = 0


def test_phase_shuffle_sits_between_the_discriminator_layers_only_in_training():
    m = make(1024, phase_shuffle=3)
    shuffles = [mod for mod in m.discriminator.modules() if isinstance(mod, PhaseShuffle)]
    assert len(shuffles) == n_upsamples(1024) - 1 == 2 and all(s.n == 3 for s in shuffles)
    x = clips(4, 1024)["x"]
    d = m.discriminator
    with torch.no_grad():
        assert torch.equal(d.eval()(x), d(x))           # deterministic in eval mode
        torch.manual_seed(1)
        a = d.train()(x)
        torch.manual_seed(2)
        assert not torch.equal(a, d(x))                 # shuffled in training
    assert torch.equal(make(1024, phase_shuffle=0).discriminator.train()(x), make(1024, phase_shuffle=0)
                       .discriminator.eval()(x))
    with pytest.raises(ValueError, match="phase_shuffle=64 is too large for a 64-sample activation"):
        make(256, phase_shuffle=64)                     # 256 -> 64 (shuffled) -> 16 samples
    make(256, phase_shuffle=63)


# ---- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length, k, l0", [(8000, 4, 32), (16000, 4, 63), (1024, 3, 16), (1000, 2, 63),
                                           (16384, 5, 16)])
def test_clips_have_exactly_the_data_length(length, k, l0):
    m = make(length, classes=3)
    assert n_upsamples(length) == k and m.generator.l0 == l0
    assert 0 <= l0 * 4 ** k - length < 4 ** k          # the crop drops less than one first-layer step
    with torch.no_grad():
        uncropped = m.generator.net(m.generator.fc(torch.randn(2, 12)).view(2, -1, l0))
    assert uncropped.shape == (2, 1, l0 * 4 ** k)
    a = m.sample(3, cond=[0, 1, 2], generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 1, length) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0.05
    assert m.discriminator(a, torch.tensor([0, 1, 2])).shape == (3,)
    out = m.loss({"x": a, "y": torch.tensor([0, 1, 2])})
    assert all(torch.isfinite(v) for v in out.values())


def test_bad_configs_are_clear_errors():
    for kw, match in (({"loss": "bce"}, "model.loss='bce'; expected one of wgan-gp, hinge"),
                      ({"length": 8}, "length >= 16"), ({"d_steps": 0}, "d_steps >= 1"),
                      ({"phase_shuffle": -1}, "phase_shuffle >= 0"), ({"collapse_fraction": 1.0}, "fraction")):
        with pytest.raises(ValueError, match=match):
            WaveGAN(WaveGANConfig(**{"g_width": 4, "d_width": 4, "length": 256, **kw}))
    with pytest.raises(TypeError, match="temperature"):
        make().sample(2, temperature=0.5)
    with pytest.raises(ValueError, match="conditional"):
        make(classes=2).loss(clips())
    with pytest.raises(ValueError, match="without labels"):
        make().sample(2, cond=1)


# ---- the discriminator and the losses --------------------------------------------------------------


@pytest.mark.parametrize("sn", [True, False])
def test_projection_discriminator_depends_on_the_label(sn):
    m = make(classes=3, spectral_norm=sn)
    d = m.discriminator.eval()
    x = clips(4)["x"]
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        gap = d(x, y1) - d(x, y0)
        pooled = d.phi(x).sum(2)                        # (N, C): the features summed over time
        expected = ((d.embed.weight[1] - d.embed.weight[0]) * pooled).sum(1)   # logit = psi + <embed(y), pooled>
        unconditional = d.psi(d.phi(x).flatten(1)).squeeze(1)
    assert gap.abs().min() > 1e-4
    assert torch.allclose(gap, expected, atol=1e-5)
    assert torch.allclose(d(x, y0), unconditional + (d.embed.weight[0] * pooled).sum(1), atol=1e-5)
    assert make().discriminator.embed is None


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    hinge, wgan = make(loss="hinge"), make(loss="wgan-gp")
    assert torch.allclose(hinge.d_loss(real, fake), torch.tensor((0 + 2) / 2 + (1.5 + 0) / 2))
    assert torch.allclose(wgan.d_loss(real, fake), torch.tensor(-1.25 - 0.5))   # E[D(fake)] - E[D(real)]
    for m in (hinge, wgan):
        assert torch.allclose(m.g_loss(fake), torch.tensor(1.25))


class Linear(torch.nn.Module):
    """D(x) = <w, x>: its gradient in x is w everywhere, so the penalty is (||w|| - 1)^2 exactly."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x, y=None):
        return (x.flatten(1) * self.w).sum(1)


@pytest.mark.parametrize("norm", [1.0, 3.0, 0.5])
def test_gradient_penalty_is_the_squared_distance_of_the_gradient_norm_from_one(norm):
    m = make(loss="wgan-gp")
    w = torch.randn(256)
    m.discriminator = Linear(w / w.norm() * norm)
    b = clips(6)
    gp = m.gradient_penalty(b["x"], torch.zeros_like(b["x"]), None)
    assert math.isclose(gp.item(), (norm - 1) ** 2, abs_tol=1e-5)
    assert gp.requires_grad                             # a double backward: D's weights get its gradient
    gp.backward()
    if norm != 1.0:
        assert m.discriminator.w.grad.abs().sum() > 0
    with torch.no_grad():                               # validation: the value, without a graph
        again = m.gradient_penalty(b["x"], torch.zeros_like(b["x"]), None)
    assert math.isclose(again.item(), (norm - 1) ** 2, abs_tol=1e-5) and not again.requires_grad


def test_validation_loss_sums_both_players_and_includes_the_penalty():
    m = make(classes=4).eval()
    with torch.no_grad():
        out = m.loss(clips(8, classes=4))
    assert torch.allclose(out["loss"], out["d_loss"] + out["g_loss"])
    assert out["gp"] > 0 and 0 < out["d_real"] < 1 and 0 < out["d_fake"] < 1
    assert "gp" not in make(classes=4, loss="hinge").eval().loss(clips(8, classes=4))


@pytest.mark.parametrize("loss, sn, classes, d_steps", [("wgan-gp", False, 3, 1), ("wgan-gp", True, 0, 3),
                                                         ("hinge", True, 3, 2), ("hinge", False, 0, 1)])
def test_train_step_updates_each_player_with_its_own_loss(loss, sn, classes, d_steps):
    m = make(classes=classes, loss=loss, spectral_norm=sn, d_steps=d_steps).train()
    stepper = RecordingStepper(m)
    torch.manual_seed(0)
    out = m.train_step(clips(8, classes=classes), stepper)
    assert stepper.steps == {"d": d_steps, "g": 1}
    assert {"loss", "d_loss", "g_loss", "d_real", "d_fake"} <= set(out) and ("gp" in out) == (loss == "wgan-gp")
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.values())
    assert torch.equal(out["loss"], out["g_loss"])
    d_phase, g_phase = stepper.seen["d"], stepper.seen["g"]
    assert all(g is not None for g in d_phase["d"]) and all(g is None for g in d_phase["g"])   # G untouched
    assert all(g is not None for g in g_phase["g"])
    assert all(g is None or g.abs().sum() == 0 for g in g_phase["d"])                          # D frozen
    assert all(p.requires_grad for p in m.discriminator.parameters())                          # and unfrozen


def test_param_groups_split_the_players():
    m = make(classes=3, lr_g=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.99)
    groups = m.param_groups(TrainStub())
    assert set(groups) == {"d", "g"}
    assert groups["d"]["lr"] == 4e-4 and groups["g"]["lr"] == 1e-4 and groups["g"]["betas"] == (0.0, 0.99)
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    assert {id(p) for p in groups["d"]["params"]} == {id(p) for p in m.discriminator.parameters()}


def test_presets_are_valid_keys():
    for name in PRESETS:
        cfg = apply_preset(RunConfig(family="wavegan", model=WaveGANConfig()), PRESETS, name)
        assert cfg.train.grad_clip == 0.0
        WaveGAN(cfg.model)


# ---- sampling and the watch ------------------------------------------------------------------------


def test_sampling_is_seeded_and_truncation_bounds_the_latents():
    m = make(classes=2).train()
    a = m.sample(4, cond=[0, 1, 0, 1], generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, m.sample(4, cond=[0, 1, 0, 1], generator=torch.Generator().manual_seed(7)))
    assert m.generator.training                         # sampling leaves G's mode alone
    z, y = m.draw(5, generator=torch.Generator().manual_seed(3), truncation=0.5)
    assert z.abs().max() <= 0.5 and y.shape == (5,) and set(y.tolist()) <= {0, 1}
    assert torch.equal(m.decode(z, y), m.sample(5, generator=torch.Generator().manual_seed(3), truncation=0.5))
    with pytest.raises(ValueError, match="truncation"):
        m.sample(2, truncation=0.0)


def test_watch_flags_collapse_and_survives_state_dict():
    m = make(classes=2)
    assert torch.equal(m.watch_y[:4], torch.tensor([0, 1, 0, 1]))
    assert torch.equal(m.watch_z, make(classes=2).watch_z)   # fixed latents, independent of the global RNG
    stats, warning = m.watch(None)
    assert warning is None and stats["diversity"] > 0 and stats["diversity_ratio"] == 1.0
    healthy = stats["diversity"]
    other = make(classes=2)
    saved = {k: v.clone() for k, v in other.state_dict().items()}
    other.watch(None)
    other.load_state_dict(saved)                        # the trainer's EMA swap: the reference stays
    assert math.isclose(other.watch_ref.item(), healthy, rel_tol=1e-6)
    last = m.generator.net[-2]                          # the last transposed conv, before tanh
    with torch.no_grad():
        last.weight.zero_()                             # every clip = tanh(bias): collapse
    stats, warning = m.watch(None)
    assert stats["diversity"] < 1e-6 and "mode collapse" in warning
    fresh = make(classes=2)
    fresh.load_state_dict(m.state_dict())
    assert "mode collapse" in fresh.watch(None)[1]      # the reference came back with the weights


def test_the_watch_ignores_phase():
    """The same tone at other phases is one mode: its spectral diversity is ~0 where its waveforms differ."""
    m = make(512)
    t = torch.arange(512) / 512
    phase = torch.rand(64, 1, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    tone = (0.5 * torch.sin(2 * math.pi * 32 * t + phase))[:, None]
    m.decode = lambda z, y=None: tone
    stats, _ = m.watch(None)
    assert stats["diversity"] < 1e-6 and torch.pdist(tone[:, 0]).mean() > 1


# ---- training: two tones ---------------------------------------------------------------------------

RATE = 1024
TONES = (40.0, 150.0)   # Hz; neither is a multiple of the generator's upsampling grid (16 Hz, 64 Hz, 256 Hz)


def two_tones(n: int, g: torch.Generator) -> dict:
    """Class 0: a 40 Hz sine, class 1: a 150 Hz sine, each at a random phase and amplitude 0.5..0.9, 1 s at 1024 Hz."""
    y = torch.randint(2, (n,), generator=g)
    f = torch.tensor(TONES)[y][:, None]
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    amp = 0.5 + 0.4 * torch.rand(n, 1, generator=g)
    return {"x": (amp * torch.sin(2 * math.pi * f * torch.arange(RATE) / RATE + phase))[:, None], "y": y}


def dominant(x: torch.Tensor) -> torch.Tensor:
    """The frequency (Hz) of each clip's largest FFT bin, (n, 1, T) -> (n,)."""
    return torch.fft.rfft(x[:, 0]).abs().argmax(1).float() * RATE / x.shape[-1]


def follows_labels(m: WaveGAN) -> list[float]:
    """Per label, the share of 64 generated clips whose dominant frequency is within 5 Hz of that label's tone."""
    m.eval()
    shares = [((dominant(m.sample(64, cond=c, generator=torch.Generator().manual_seed(5))) - f).abs() <= 5)
              .float().mean().item() for c, f in enumerate(TONES)]
    m.train()
    return shares


def test_training_on_two_tones_makes_the_clips_follow_their_label():
    """~10 s on one core: 300 steps of the model's own train_step (WGAN-GP, the default loss) at lr 1e-3."""
    torch.manual_seed(0)
    m = WaveGAN(WaveGANConfig(sample_rate=RATE, length=RATE, num_classes=2, latent_dim=16, label_dim=8,
                              g_width=8, d_width=8, lr_g=1e-3, lr_d=1e-3))
    assert max(follows_labels(m)) < 0.2                 # not so at init
    stepper = RecordingStepper(m)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        out = m.train_step(two_tones(32, g), stepper)
    assert all(torch.isfinite(v) for v in out.values())
    shares = follows_labels(m)
    assert min(shares) >= 0.9, shares


# ---- ONNX --------------------------------------------------------------------------------------------


@pytest.mark.needs("onnx", MISSING)
@pytest.mark.parametrize("classes", [0, 3])
def test_the_generator_exports_to_onnx_and_samples_like_torch(classes, tmp_path):
    from genlab.export import export, onnx_backend
    from genlab.export.onnx import TOLERANCE

    m = make(1000, classes=classes).eval()
    with torch.no_grad():
        for p in m.parameters():                        # away from the init, so that a mismatch would show
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    manifest = export(m, tmp_path / "onnx")
    (entry,) = manifest["graphs"].values()
    assert [(s["name"], s["shape"]) for s in entry["outputs"]] == [("waveform", ["batch", 1, 1000])]
    assert [s["name"] for s in entry["inputs"]] == ["z"] + (["y"] if classes else [])
    assert manifest["latent"] == {"dim": 8, "mean": 0.0, "std": 1.0} and manifest["waveform"] == {"sample_rate": 1000}
    assert manifest["max_abs_diff"]["generator"] <= TOLERANCE
    cond = torch.arange(5) % classes if classes else None
    ref = m.sample(5, cond=cond, generator=torch.Generator().manual_seed(3), truncation=2.0)
    fast = onnx_backend(copy.deepcopy(m), tmp_path / "onnx")
    with torch.no_grad():
        for p in fast.parameters():                     # what is left of the torch network must not matter
            p.zero_()
    got = fast.sample(5, cond=cond, generator=torch.Generator().manual_seed(3), truncation=2.0)
    assert got.shape == (5, 1, 1000) and (got - ref).abs().max() <= TOLERANCE and ref.std() > 0.05
