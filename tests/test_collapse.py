"""The GAN families' mode-collapse watch (genlab.models.collapse) sees collapse within a class: a conditional
generator that gives one output per label, whatever the latent, keeps a high diversity over mixed labels (what
the watch measured before) but none among the samples of one label."""

import math

import pytest
import torch
from torch import nn

from genlab.models.collapse import PER_CLASS, WATCH_N
from genlab.models.gan import GAN, GANConfig
from genlab.models.wavegan import WaveGAN, WaveGANConfig

K = 10


class PerLabel(nn.Module):
    """output = tanh(E[y] + W z): a stand-in conditional generator. Labels in `collapsed` ignore z (W z is
    dropped for them): each of those classes has collapsed to a single output."""

    def __init__(self, latent_dim: int, shape: tuple[int, ...]):
        super().__init__()
        self.shape, size = shape, math.prod(shape)
        self.label = nn.Embedding(K, size)
        self.latent = nn.Linear(latent_dim, size, bias=False)
        self.collapsed: set[int] = set()

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        keep = torch.tensor([int(v) not in self.collapsed for v in y.tolist()], dtype=torch.float32)[:, None]
        return torch.tanh(self.label(y) + keep * self.latent(z)).view(-1, *self.shape)


def gan() -> GAN:
    torch.manual_seed(0)
    m = GAN(GANConfig(image_size=8, num_classes=K, g_width=8, d_width=8, latent_dim=16))
    m.generator = PerLabel(16, (1, 8, 8))
    return m


def wavegan() -> WaveGAN:
    torch.manual_seed(0)
    m = WaveGAN(WaveGANConfig(sample_rate=256, length=256, num_classes=K, g_width=4, d_width=4, latent_dim=8))
    m.generator = PerLabel(8, (1, 256))
    return m


@pytest.mark.parametrize("make", [gan, wavegan])
def test_the_watch_names_the_classes_that_collapsed_while_mixed_diversity_stays_high(make):
    m = make()
    healthy, warning = m.watch(None)
    assert warning is None and healthy["collapsed_classes"] == 0 and healthy["diversity_ratio"] == 1.0
    assert healthy["class_diversity"] > 0.1
    m.generator.collapsed = {3, 7}
    stats, warning = m.watch(None)
    assert "within 2 of 10 classes (label 3, 7)" in warning and stats["collapsed_classes"] == 2
    assert stats["diversity_ratio"] < 1e-6
    m.generator.collapsed = set(range(K))                   # every class one point: the case the old watch missed
    stats, warning = m.watch(None)
    assert "within 10 of 10 classes" in warning and stats["class_diversity"] < 1e-6
    assert stats["diversity"] > 0.5 * healthy["diversity"]  # over mixed labels it still looks diverse
    m.generator.collapsed = set()
    assert m.watch(None)[1] is None                         # recovered


@pytest.mark.parametrize("make", [gan, wavegan])
def test_a_collapse_already_there_at_the_first_watch_is_seen_against_the_mixed_spread(make):
    """A run validated for the first time after its classes collapsed (a benchmark validates once, at the end):
    each class's highest recorded value is its collapsed one, so only the comparison with the mixed spread sees it."""
    m = make()
    m.generator.collapsed = {2, 4}
    stats, warning = m.watch(None)
    assert "within 2 of 10 classes (label 2, 4)" in warning and stats["collapsed_classes"] == 2
    assert stats["diversity_ratio"] == 1.0 and stats["class_to_mixed"] < 1e-6   # against its own past: fine
    m.generator.collapsed = set()
    healthy, warning = make().watch(None)
    assert warning is None and healthy["class_to_mixed"] > 0.4


@pytest.mark.parametrize("make", [gan, wavegan])
def test_the_per_class_references_survive_save_load_and_runs_without_them_load(make):
    m = make()
    m.watch(None)
    best = m.watch_class_ref.clone()
    assert best.shape == (K,) and (best > 0).all()
    saved = {k: v.clone() for k, v in m.state_dict().items()}
    m.generator.collapsed = {5}
    m.watch(None)
    m.load_state_dict(saved)                                # the trainer's EMA swap: references never go down
    assert torch.equal(m.watch_class_ref, best)
    fresh = make()
    fresh.load_state_dict(saved)
    fresh.generator.collapsed = {5}
    assert "label 5)" in fresh.watch(None)[1]               # the references came back with the weights
    del saved["watch_class_ref"]                            # a run written before the per-class watch
    old = make()
    old.load_state_dict(saved)
    assert torch.equal(old.watch_class_ref, torch.zeros(K)) and old.watch(None)[1] is None


def test_each_class_is_measured_on_the_same_latents_and_unconditional_models_keep_the_mixed_measure():
    m = gan()
    seen = []
    decode = m.decode
    m.decode = lambda z, y: seen.append((z.clone(), None if y is None else y.clone())) or decode(z, y)
    m.watch(None)
    (z_mixed, y_mixed), (z, y) = seen
    assert len(z_mixed) == WATCH_N and torch.equal(y_mixed, torch.arange(WATCH_N) % K)
    assert torch.equal(y, torch.arange(K).repeat_interleave(PER_CLASS))
    assert all(torch.equal(z[i * PER_CLASS:(i + 1) * PER_CLASS], m.watch_z[:PER_CLASS]) for i in range(K))
    torch.manual_seed(0)
    plain = GAN(GANConfig(image_size=8, g_width=8, d_width=8, latent_dim=16))
    stats, _ = plain.watch(None)
    assert set(stats) == {"diversity", "diversity_ratio"} and plain.watch_class_ref is None
