"""The VAE's maths: the closed-form KL, the likelihoods, beta, and conditioning; the fitted sampling prior it shares
with the AE."""

import math

import pytest
import torch

from genlab.config import from_dict
from genlab.api import interpolate
from genlab.models.autoencoder import AE, VAE, AEConfig, VAEConfig, likelihood_of


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


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_a_training_loss_runs_the_decoder_once_and_logs_the_error_of_that_pass(likelihood):
    """recon_mse is the logged error of the decoder pass the loss already made: a second pass (it used to decode
    again, with a graph, for the log) cost a third of a training step."""
    model = vae(likelihood=likelihood, num_classes=3)
    calls = []
    model.decoder.register_forward_hook(lambda module, args, out: calls.append(out.detach()))
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0])
    out = model.loss({"x": x, "y": y})
    assert len(calls) == 1
    assert out["recon_mse"].item() == pytest.approx(((model.to_image(calls[0]) - x) ** 2).mean().item(), rel=1e-6)
    assert not out["recon_mse"].requires_grad


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


def test_auto_likelihood_is_bernoulli_for_grey_images_from_16_wide_and_new_runs_are_gaussian():
    auto = {"likelihood": "auto"}
    assert likelihood_of(VAEConfig(image_size=28, **auto)) == "bernoulli"
    assert likelihood_of(VAEConfig(image_size=8, **auto)) == "gaussian"
    assert likelihood_of(VAEConfig(image_size=32, in_channels=3, **auto)) == "gaussian"
    assert likelihood_of(VAEConfig(image_size=28)) == "gaussian"
    assert from_dict(VAEConfig, {"image_size": 28, "likelihood": "auto"}).likelihood == "auto"  # older runs keep it
    x = torch.tensor([-1.0, 1.0]).repeat(128).view(1, 1, 16, 16)
    assert vae(image_size=16, **auto).nll(torch.zeros_like(x), x).item() == pytest.approx(256 * math.log(2), rel=1e-5)


COV = torch.tensor([[1.0, 0.8, 0.0, 0.0], [0.8, 1.0, 0.0, 0.0], [0.0, 0.0, 0.25, 0.0], [0.0, 0.0, 0.0, 2.0]])


def fitted_vae():
    """A 3-class VAE whose fitted prior is set by hand: class 2 at mean 5 with covariance COV (x0 and x1
    correlated 0.8), classes 0 and 1 still N(0, I)."""
    model = vae(num_classes=3)
    with torch.no_grad():
        model.prior_mean[2] = 5.0
        model.prior_cov[2] = COV
        model.prior_batches[2] = 100
    return model


def test_the_fitted_prior_follows_each_classs_codes_with_their_full_covariance():
    torch.manual_seed(0)
    model = vae(num_classes=3)
    means = torch.tensor([[1.0, -2.0, 0.5, 0.0], [-3.0, 0.0, 0.0, 1.0]])
    for _ in range(1500):       # classes 0 and 1 only
        y = torch.randint(0, 2, (64,))
        z = means[y] + torch.distributions.MultivariateNormal(torch.zeros(4), COV).sample((64,))
        model.track_codes(z, y)
    mean, tril = model.fitted_prior()
    for c in (0, 1):
        assert torch.allclose(mean[c], means[c], atol=0.15)
        assert torch.allclose(tril[c] @ tril[c].T, COV, atol=0.2)
    assert torch.equal(mean[2], torch.zeros(4)) and torch.allclose(tril[2], torch.eye(4), atol=1e-5)  # never seen
    z, y = model.draw(20_000, cond=1, generator=torch.Generator().manual_seed(0))
    assert (y == 1).all() and torch.allclose(z.mean(0), mean[1], atol=0.05)
    assert torch.allclose(torch.cov(z.T), tril[1] @ tril[1].T, atol=0.06)   # the correlation too, not a diagonal


def test_the_first_batch_sets_the_fit_and_later_ones_average_in_float32_without_cancellation():
    model = vae()
    z = torch.randn(64, 4) * torch.tensor([0.01, 1.0, 1.0, 1.0]) + 30.0    # a large mean, one tiny variance
    model.track_codes(z, None)
    assert torch.allclose(model.prior_mean[0], z.mean(0), atol=1e-4)    # the N(0, I) start leaves no trace
    assert torch.allclose(model.prior_cov[0], torch.cov(z.T, correction=0), atol=1e-4)
    # batch after batch, under bf16 autocast as training with --precision bf16 runs: still the codes' statistics
    fresh, codes = vae(), []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(50):
            codes.append(torch.randn(64, 4, generator=torch.Generator().manual_seed(i)) * torch.tensor(
                [0.01, 1.0, 1.0, 1.0]) + 30.0)
            fresh.track_codes(codes[-1], None)
    every = torch.cat(codes)
    assert torch.allclose(fresh.prior_mean[0], every.mean(0), atol=1e-3)
    cov = fresh.prior_cov[0]
    assert cov[0, 0].item() == pytest.approx(1e-4, rel=0.1)     # E[z z^T] - m m^T would lose this at mean 30
    assert torch.allclose(cov[1:, 1:], torch.eye(3), atol=0.1)
    mean, tril = fresh.fitted_prior()                             # and it factorises
    assert torch.allclose(tril[0] @ tril[0].T, cov, atol=2e-5)


def test_training_steps_move_the_fitted_prior_of_their_labels_only_and_evaluation_none():
    model = vae(num_classes=3)
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 0, 1, 0])
    start = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("prior_")}
    model.eval()
    model.loss({"x": x, "y": y})
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())
    model.train()
    model.loss({"x": x, "y": y})
    assert model.prior_batches.tolist() == [1, 1, 0]
    assert (model.prior_mean.abs().sum(1) > 0).tolist() == [True, True, False]
    assert torch.equal(model.prior_cov[2], torch.eye(4)) and not torch.equal(model.prior_cov[0], torch.eye(4))
    unconditional = vae().train()
    unconditional.loss({"x": x, "y": torch.tensor([0, 5, 9, 2])})   # labels in the batch play no part
    assert unconditional.prior_mean.shape == (1, 4) and unconditional.prior_mean.abs().sum() > 0


def test_the_standard_prior_is_n01_and_older_runs_keep_it():
    standard = vae(num_classes=3, prior="standard")
    assert not any(k.startswith("prior_") for k in standard.state_dict())
    z, _ = standard.draw(3, cond=1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(z, torch.randn(3, 4, generator=torch.Generator().manual_seed(4)))
    assert standard.onnx_extras()["latent"] == {"dim": 4, "mean": 0.0, "std": 1.0}
    assert vae().fitted and VAEConfig().prior == "fitted"
    # a run written before model.prior existed has no such key: it loads as it was trained, sampling N(0, I)
    before = from_dict(VAEConfig, {"width": 8, "latent_dim": 4, "num_classes": 3})
    assert before.prior == "standard" and not VAE(before).fitted


def test_the_fitted_prior_is_exported_and_bad_priors_are_refused():
    model = fitted_vae()
    prior = model.onnx_extras()["latent"]
    assert prior["mean"][2] == [5.0] * 4 and len(prior["mean"]) == 3
    tril = torch.tensor(prior["scale_tril"][2])
    assert torch.allclose(tril @ tril.T, COV, atol=1e-4) and torch.equal(tril, tril.tril())
    with pytest.raises(ValueError, match="class-conditional"):
        model.latent(3)
    with pytest.raises(ValueError, match="expected one of fitted, standard"):
        vae(num_classes=3, prior="cauchy")
    with torch.no_grad():
        model.prior_cov[1] = -torch.eye(4)        # a damaged weights file
    with pytest.raises(ValueError, match="not a Gaussian"):
        model.sample(2, cond=1)


def test_a_latent_walk_starts_and_ends_at_draws_from_the_labels_prior():
    model = fitted_vae().eval()
    walk = interpolate(model, seeds=(0, 1), frames=3, rows=2, label=2).view(2, 3, 1, 8, 8)
    for end, seed in ((0, 0), (2, 1)):
        expected = model.decode(*model.draw(2, cond=2, generator=torch.Generator().manual_seed(seed)))
        assert torch.allclose(walk[:, end], expected, atol=1e-6)


def test_the_autoencoder_samples_from_the_same_fitted_prior_and_older_runs_keep_its_diagonal_one():
    torch.manual_seed(0)
    ae = AE(AEConfig(width=8, latent_dim=4, num_classes=3)).train()
    x, y = torch.rand(6, 1, 8, 8) * 2 - 1, torch.tensor([0, 0, 1, 1, 1, 0])
    ae.loss({"x": x, "y": y})
    with torch.no_grad():
        z = ae.encode(x, y)
    assert torch.allclose(ae.prior_mean[1], z[y == 1].mean(0), atol=1e-5)      # the first batch sets the fit
    assert torch.allclose(ae.prior_cov[1], torch.cov(z[y == 1].T, correction=0), atol=1e-5)
    assert ae.prior_batches.tolist() == [1, 1, 0] and torch.equal(ae.z_mean, torch.zeros(4))
    draws, _ = ae.draw(20_000, cond=1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(draws.mean(0), ae.prior_mean[1], atol=0.02)
    assert "scale_tril" in ae.onnx_extras()["latent"]
    # a run written before the fitted prior: the diagonal Gaussian over all codes, labels or not
    old = AE(from_dict(AEConfig, {"width": 8, "latent_dim": 4, "num_classes": 3})).train()
    assert not old.fitted and not any(k.startswith("prior_") for k in old.state_dict())
    old.loss({"x": x, "y": y})
    assert old.z_mean.abs().sum() > 0
    z, _ = old.draw(3, cond=2, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(z, old.z_mean + old.z_std * eps)
