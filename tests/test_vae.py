"""The VAE's maths: the closed-form KL, the likelihoods, beta, and conditioning."""

import math

import pytest
import torch

from genlab.config import from_dict
from genlab.api import interpolate
from genlab.models.autoencoder import VAE, VAEConfig, likelihood_of


def vae(**kw):
    torch.manual_seed(0)
    return VAE(VAEConfig(width=8, latent_dim=4, **kw))


def test_closed_form_kl_matches_a_monte_carlo_estimate():
    model = vae()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    mu, logvar = model.posterior(x)
    closed = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(200_000, *mu.shape)
    log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    mc = (log_q - log_p).mean(0)
    assert torch.allclose(closed, mc, rtol=0.03, atol=0.01)


def test_gaussian_likelihood_is_the_normal_log_density():
    model = vae(obs_sigma=0.3)
    x, mean = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    expected = -torch.distributions.Normal(mean, 0.3).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(model.nll(mean, x), expected, rtol=1e-5)


def test_bernoulli_likelihood_uses_pixels_in_0_1():
    model = vae(likelihood="bernoulli")
    x = torch.tensor([-1.0, 1.0]).repeat(32).view(1, 1, 8, 8)
    logits = torch.zeros_like(x)  # p = 0.5 everywhere -> 64 * log 2
    assert model.nll(logits, x).item() == pytest.approx(64 * math.log(2), rel=1e-5)


def test_loss_is_nll_plus_beta_kl_and_elbo_ignores_beta():
    x = {"x": torch.rand(4, 1, 8, 8) * 2 - 1}
    torch.manual_seed(1)
    a = vae(beta=1.0).loss(x)
    torch.manual_seed(1)
    b = vae(beta=4.0).loss(x)
    assert torch.allclose(a["elbo"], b["elbo"])            # same weights, same noise
    assert b["loss"].item() == pytest.approx(a["loss"].item() + 3 * a["kl"].item(), rel=1e-5)


def test_unknown_likelihood_is_rejected():
    with pytest.raises(ValueError, match="gaussian, bernoulli"):
        vae(likelihood="poisson")


def test_conditional_decoder_depends_on_the_label():
    model = vae(num_classes=10).eval()
    z = torch.randn(1, 4)
    assert not torch.allclose(model.decode(z, torch.tensor([1])), model.decode(z, torch.tensor([7])))
    with pytest.raises(ValueError, match="class-conditional"):
        model.decode(z)


def test_the_label_modulates_every_decoder_block_and_old_configs_keep_the_input_only_decoder():
    model = vae(num_classes=10, image_size=16)
    norms = [m for m in model.decoder.net if isinstance(m, torch.nn.GroupNorm)]
    assert len(model.decoder.film) == len(norms) == 5        # 16 -> 4: the start and two blocks of two norms
    z, y = torch.randn(4, 4), torch.tensor([1, 2, 3, 4])
    # FiLM starts as the identity: the same output as the input-only decoder with the same weights
    plain = vae(num_classes=10, image_size=16, label_film=False)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".film." not in k})
    assert torch.allclose(model.decode(z, y), plain.decode(z, y))
    loss = model.loss({"x": torch.rand(4, 1, 16, 16) * 2 - 1, "y": y})["loss"]
    loss.backward()
    assert all(f.weight.grad.abs().sum() > 0 for f in model.decoder.film)   # every block learns from the label
    with torch.no_grad():
        model.decoder.film[-1].bias[0] = 1.0                   # the last block's scale for channel 0: 1 + 1
    assert not torch.allclose(model.decode(z, y), plain.decode(z, y))
    assert plain.decoder.film is None and not any(".film." in k for k in plain.state_dict())
    assert from_dict(VAEConfig, {"num_classes": 10}).label_film is False          # a run's config.json without it
    assert from_dict(VAEConfig, {"label_film": True}).label_film and VAEConfig().label_film   # new runs have it


def test_auto_likelihood_is_bernoulli_for_grey_images_from_16_wide_and_gaussian_otherwise():
    assert likelihood_of(VAEConfig(image_size=28)) == "bernoulli"
    assert likelihood_of(VAEConfig(image_size=8)) == likelihood_of(VAEConfig(image_size=32, in_channels=3)) == "gaussian"
    assert likelihood_of(VAEConfig(image_size=28, likelihood="gaussian")) == "gaussian"
    x = torch.tensor([-1.0, 1.0]).repeat(128).view(1, 1, 16, 16)
    assert vae(image_size=16).nll(torch.zeros_like(x), x).item() == pytest.approx(256 * math.log(2), rel=1e-5)


def class_prior_vae():
    """A 3-class VAE with a class prior whose Gaussians are set by hand: class 2 at mean 5, std 0.5."""
    model = vae(num_classes=3, prior="class")
    with torch.no_grad():
        model.prior_mean.weight.copy_(torch.randn(3, 4))
        model.prior_logvar.weight.copy_(torch.randn(3, 4) * 0.5)
        model.prior_mean.weight[2], model.prior_logvar.weight[2] = 5.0, math.log(0.25)
    return model


def test_the_class_prior_kl_is_the_kl_to_the_labels_own_gaussian():
    model = class_prior_vae()
    x, y = torch.rand(5, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 1, 0])
    kl = model.loss({"x": x, "y": y})["kl"]
    mu, logvar = model.posterior(x, y)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(model.prior_mean(y), (0.5 * model.prior_logvar(y)).exp())
    assert kl.item() == pytest.approx(torch.distributions.kl_divergence(q, p).sum(1).mean().item(), rel=1e-5)
    # the tables learn: the KL pulls each label's Gaussian towards its posteriors
    model.loss({"x": x, "y": y})["loss"].backward()
    assert model.prior_mean.weight.grad[[0, 1, 2]].abs().sum(1).gt(0).all()


def test_class_prior_samples_come_from_their_labels_gaussian_and_export_says_so():
    model = class_prior_vae()
    z, y = model.draw(20_000, cond=2, generator=torch.Generator().manual_seed(0))
    assert (y == 2).all()
    assert torch.allclose(z.mean(0), torch.full((4,), 5.0), atol=0.02)
    assert torch.allclose(z.std(0), torch.full((4,), 0.5), atol=0.02)
    z0, _ = model.draw(20_000, cond=0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z0.mean(0), model.prior_mean.weight[0], atol=0.05)
    with pytest.raises(ValueError, match="class-conditional"):
        model.latent(3)
    prior = model.onnx_extras()["latent"]
    assert prior["mean"][2] == [5.0] * 4 and prior["std"][2] == pytest.approx([0.5] * 4)
    assert vae().onnx_extras()["latent"] == {"dim": 4, "mean": 0.0, "std": 1.0}


def test_the_class_prior_needs_labels_and_a_known_prior_name():
    with pytest.raises(ValueError, match="needs a class-conditional run"):
        vae(prior="class")
    with pytest.raises(ValueError, match="expected one of auto, standard, class"):
        vae(num_classes=3, prior="cauchy")
    standard = vae(num_classes=3, prior="standard")
    assert standard.prior_mean is None and "prior_mean.weight" not in standard.state_dict()


def test_auto_gives_conditional_runs_the_class_prior_and_older_runs_keep_the_standard_one():
    assert vae(num_classes=3).prior_mean is not None and vae().prior_mean is None
    # a run written before model.prior existed has no such key: it loads as it was trained, with N(0, I)
    before = from_dict(VAEConfig, {"width": 8, "latent_dim": 4, "num_classes": 3})
    assert before.prior == "standard" and VAE(before).prior_mean is None


def test_a_latent_walk_starts_and_ends_at_draws_from_the_labels_prior():
    model = class_prior_vae().eval()
    walk = interpolate(model, seeds=(0, 1), frames=3, rows=2, label=2).view(2, 3, 1, 8, 8)
    for end, seed in ((0, 0), (2, 1)):
        expected = model.decode(*model.draw(2, cond=2, generator=torch.Generator().manual_seed(seed)))
        assert torch.allclose(walk[:, end], expected, atol=1e-6)
