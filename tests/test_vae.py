"""The VAE's maths: the closed-form KL, the likelihoods, beta, and conditioning."""

import math

import pytest
import torch

from genlab.models.autoencoder import VAE, VAEConfig


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
