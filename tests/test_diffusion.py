"""The maths of DDPM / DDIM: schedules, the forward marginal, parameterisations, samplers, guidance."""

from __future__ import annotations

import pytest
import torch

from genlab.models.diffusion import (DDPM, PRESETS, DDPMConfig, GaussianDiffusion, cosine_beta_schedule, guided,
                                     linear_beta_schedule)
from genlab.models.unet import UNet


def tiny_config(**kw) -> DDPMConfig:
    base = dict(in_channels=1, image_size=8, width=8, channel_mults=[1, 2], num_res_blocks=1, attn_resolutions=[4])
    return DDPMConfig(**{**base, **kw})


def toy_model_fn(T: int):
    """A nonlinear, t-dependent stand-in for a network: enough to expose any mismatch between samplers."""
    return lambda x, t: torch.tanh(1.3 * x) * (t.float() / T + 0.5).view(-1, 1, 1, 1)


@pytest.mark.parametrize("schedule,T,ts", [("cosine", 50, [0, 3, 20, 45]), ("linear", 1000, [0, 99, 299])])
def test_q_sample_marginal_matches_iterated_noising(schedule, T, ts):
    betas = (cosine_beta_schedule if schedule == "cosine" else linear_beta_schedule)(T)
    proc = GaussianDiffusion(betas)
    g = torch.Generator().manual_seed(0)
    n = 20000
    x0 = torch.tensor([-0.9, -0.3, 0.4, 1.0])
    x = x0.expand(n, 4).clone()
    for t in range(max(ts) + 1):  # index t = t + 1 applications of x <- sqrt(1 - beta) x + sqrt(beta) eps
        x = (1 - betas[t]).sqrt().item() * x + betas[t].sqrt().item() * torch.randn(n, 4, generator=g)
        if t in ts:
            abar = proc.alphas_cumprod[t].item()
            mean, var = x.mean(0), x.var(0)
            se = (1 - abar) ** 0.5 / n ** 0.5  # standard error of the mean
            assert torch.allclose(mean, abar ** 0.5 * x0, atol=5 * se), (t, mean, abar ** 0.5 * x0)
            assert torch.allclose(var, torch.full((4,), 1 - abar), rtol=5 * (2 / n) ** 0.5), (t, var, 1 - abar)
            # and the closed form itself produces the same statistics
            xt = proc.q_sample(x0.expand(n, 4), torch.full((n,), t), torch.randn(n, 4, generator=g))
            assert torch.allclose(xt.mean(0), mean, atol=7 * se)
            assert torch.allclose(xt.var(0), var, rtol=7 * (2 / n) ** 0.5)


@pytest.mark.parametrize("T", [50, 1000])
def test_schedules_monotone_and_in_range(T):
    for betas in (linear_beta_schedule(T), cosine_beta_schedule(T)):
        abar = GaussianDiffusion(betas).alphas_cumprod.double()
        assert betas.shape == (T,) and (betas > 0).all() and (betas < 1).all()
        assert (abar > 0).all() and (abar < 1).all() and (abar[1:] < abar[:-1]).all()
    assert GaussianDiffusion(cosine_beta_schedule(T)).alphas_cumprod[-1] < 1e-4
    assert GaussianDiffusion(linear_beta_schedule(T)).alphas_cumprod[-1] < 1e-3
    b = linear_beta_schedule(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert linear_beta_schedule(100)[-1].item() == pytest.approx(0.2)  # improved-DDPM scaling 1000 / T
    assert (linear_beta_schedule(1000)[1:] > linear_beta_schedule(1000)[:-1]).all()


def test_v_prediction_converts_back_to_x0_and_eps():
    proc = GaussianDiffusion(cosine_beta_schedule(1000), prediction="v")
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(64, 3, 4, 4, generator=g) * 2 - 1
    eps = torch.randn(64, 3, 4, 4, generator=g)
    t = torch.randint(0, 1000, (64,), generator=g)
    x_t = proc.q_sample(x0, t, eps)
    v = proc.training_target(x0, t, eps)
    x0_hat, eps_hat = proc.predict_x0_eps(v, x_t, t, clip=False)
    assert torch.allclose(x0_hat, x0, atol=1e-5) and torch.allclose(eps_hat, eps, atol=1e-5)
    eps_proc = GaussianDiffusion(cosine_beta_schedule(1000), prediction="eps")
    assert torch.equal(eps_proc.training_target(x0, t, eps), eps)
    x0_e, eps_e = eps_proc.predict_x0_eps(eps, x_t, t, clip=False)
    keep = t < 900  # x0 from eps divides by sqrt(abar_t): only well conditioned away from t = T
    assert torch.equal(eps_e, eps) and torch.allclose(x0_e[keep], x0[keep], atol=1e-3)
    assert torch.allclose(eps_proc.predict_eps_from_x0(x_t, t, x0)[keep], eps[keep], atol=1e-3)


def test_ddim_timesteps_and_eta1_variance_is_the_ddpm_posterior_variance():
    proc = GaussianDiffusion(linear_beta_schedule(1000))
    assert proc.ddim_timesteps(1000) == list(range(999, -1, -1))
    ts = proc.ddim_timesteps(50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))
    assert proc.ddim_timesteps(1) == [999]
    with pytest.raises(ValueError):
        proc.ddim_timesteps(1001)
    for t in (1, 10, 500, 999):
        assert proc.ddim_sigma(t, t - 1, 1.0) ** 2 == pytest.approx(proc.posterior_variance[t].item(), rel=1e-4)
    assert proc.ddim_sigma(500, 480, 0.0) == 0.0


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddim_eta1_all_steps_equals_ddpm_ancestral(prediction):
    T = 40
    proc = GaussianDiffusion(cosine_beta_schedule(T), prediction=prediction)
    fn, shape = toy_model_fn(T), (6, 1, 4, 4)
    a = proc.ddim_sample(fn, shape, steps=T, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = proc.ddpm_sample(fn, shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    c = proc.ddim_sample(fn, shape, steps=T, eta=0.0, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(a, c, atol=1e-2)  # the check can tell the two samplers apart


def test_ddim_eta0_is_deterministic_given_x_T_and_seeds_reproduce():
    proc = GaussianDiffusion(cosine_beta_schedule(100))
    fn, shape = toy_model_fn(100), (4, 1, 4, 4)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    a = proc.ddim_sample(fn, shape, steps=10, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(1))
    b = proc.ddim_sample(fn, shape, steps=10, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = proc.ddim_sample(fn, shape, steps=10, eta=0.5, x_T=x_T, generator=torch.Generator().manual_seed(1))
    d = proc.ddim_sample(fn, shape, steps=10, eta=0.5, x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c, d)

    model = DDPM(tiny_config(num_classes=3)).eval()
    for p in model.parameters():  # the zero-initialised output layers would make every sample alike
        torch.nn.init.normal_(p, std=0.1)
    kw = dict(cond=[0, 1, 2, 1], steps=5, guidance=2.0)
    s1 = model.sample(4, generator=torch.Generator().manual_seed(7), **kw)
    s2 = model.sample(4, generator=torch.Generator().manual_seed(7), **kw)
    s3 = model.sample(4, generator=torch.Generator().manual_seed(8), **kw)
    assert s1.shape == (4, 1, 8, 8) and torch.equal(s1, s2) and not torch.equal(s1, s3)
    assert s1.min() >= -1 and s1.max() <= 1


def test_guidance_formula_and_scale_one_is_the_conditional_prediction():
    model = DDPM(tiny_config(num_classes=4)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(5, 1, 8, 8, generator=g), torch.randint(0, 1000, (5,), generator=g)
    y = torch.tensor([0, 1, 2, 3, 0])
    cond, uncond = model.unet(x, t, y), model.unet(x, t, torch.full_like(y, 4))
    assert not torch.allclose(cond, uncond)
    assert torch.equal(model.guided_output(x, t, y, 1.0), cond)
    assert torch.allclose(model.guided_output(x, t, y, 3.0), uncond + 3 * (cond - uncond), atol=1e-5)
    assert torch.allclose(guided(cond, uncond, 1.0), cond, atol=1e-6)
    assert torch.equal(model.unet(x, t, None), uncond)  # y=None is the null label


def test_label_dropout_rate():
    model = DDPM(tiny_config(num_classes=10, p_uncond=0.1))
    torch.manual_seed(0)
    y = torch.randint(0, 10, (40000,))
    dropped = model.drop_labels(y)
    frac = (dropped == 10).float().mean().item()
    assert abs(frac - 0.1) < 0.01, frac
    kept = dropped != 10
    assert torch.equal(dropped[kept], y[kept])


@pytest.mark.parametrize("size,resolutions", [(8, [8, 4]), (16, [16, 8, 4]), (28, [28, 14, 7]), (32, [32, 16, 8])])
@pytest.mark.parametrize("num_classes", [0, 5])
def test_unet_output_shape(size, resolutions, num_classes):
    net = UNet(3, size, width=8, channel_mults=[1, 2, 2], num_res_blocks=1, attn_resolutions=[8, 7],
               num_classes=num_classes)
    assert net.resolutions == resolutions[:3] + [resolutions[-1]] * (3 - len(resolutions))
    x = torch.randn(2, 3, size, size)
    y = torch.tensor([0, 4]) if num_classes else None
    assert net(x, torch.tensor([0, 999]), y).shape == x.shape


def test_unet_blocks_work_in_place_only_on_their_own_maps():
    """ResBlock adds (and, without autograd, applies SiLU) in place: the output, its dtype under autocast and the
    gradients are those of the out-of-place forms, and neither the block's input nor the embedding changes."""
    from torch.nn.functional import silu
    from genlab.models.unet import ResBlock

    def out_of_place(block, x, emb):
        h = block.conv1(silu(block.norm1(x))) + block.emb_proj(silu(emb))[:, :, None, None]
        return block.skip(x) + block.conv2(silu(block.norm2(h)))

    torch.manual_seed(0)
    dtypes = []
    for block in (ResBlock(8, 8, 16), ResBlock(8, 16, 16)):     # identity skip, and a 1x1 conv skip
        torch.nn.init.normal_(block.conv2.weight, std=0.1)       # not the zero init, so every branch counts
        x, emb = torch.randn(2, 8, 6, 6, requires_grad=True), torch.randn(2, 16)
        x0, emb0 = x.detach().clone(), emb.clone()
        expected, out = out_of_place(block, x, emb), block(x, emb)
        assert torch.allclose(out, expected, atol=1e-6)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
        assert torch.allclose(grad, grad_expected, atol=1e-5)
        with torch.no_grad():
            assert torch.allclose(block(x, emb), expected, atol=1e-6)
        assert torch.equal(x.detach(), x0) and torch.equal(emb, emb0)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):   # bf16 maps, a float32 input
            dtypes.append(block(x, emb).dtype)
            assert dtypes[-1] == out_of_place(block, x, emb).dtype
    assert dtypes == [torch.float32, torch.bfloat16]    # the identity skip keeps the float32 residual


def test_errors_are_specific():
    model = DDPM(tiny_config(timesteps=20))
    with pytest.raises(ValueError, match="ddim"):
        model.sample(2, sampler="ddpm", steps=10)
    with pytest.raises(ValueError, match="conditional"):
        model.sample(2, guidance=2.0)
    with pytest.raises(TypeError, match="temperature"):
        model.sample(2, temperature=0.5)
    assert model.sample(2, sampler="ddpm").shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="schedule"):
        DDPM(tiny_config(schedule="quadratic"))


def test_presets_build_and_train_step():
    for name, preset in PRESETS.items():
        cfg = DDPMConfig(in_channels=1, image_size=8, num_classes=10)
        for key, value in preset.items():
            if key.startswith("model."):
                setattr(cfg, key[len("model."):], value)
        assert {"train.ema", "train.lr", "train.batch_size", "train.steps", "train.warmup_steps"} <= set(preset)
        if name == "tiny":
            out = DDPM(cfg).loss({"x": torch.rand(8, 1, 8, 8) * 2 - 1, "y": torch.randint(0, 10, (8,))})
            out["loss"].backward()
            assert torch.isfinite(out["loss"])


# eps prediction learns x_0 at large t more slowly (x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) amplifies
# its errors), so after 150 steps its samples are only part-way there; v prediction is nearly done.
@pytest.mark.parametrize("prediction,max_ratio", [("eps", 0.6), ("v", 0.1)])
def test_training_on_a_fixed_pattern_learns_it(prediction, max_ratio):
    torch.manual_seed(0)
    pattern = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 1.6 - 0.8  # checkerboard, +-0.8
    batch = {"x": pattern.expand(32, 1, 8, 8).clone(), "y": None}
    model = DDPM(tiny_config(attn_resolutions=[], prediction=prediction))

    def val_loss():
        model.eval()
        torch.manual_seed(123)
        with torch.no_grad():
            loss = sum(model.loss(batch)["loss"].item() for _ in range(4)) / 4
        model.train()
        return loss

    def sample_error():
        s = model.eval().sample(16, generator=torch.Generator().manual_seed(0), steps=20)
        model.train()
        return (s - pattern).pow(2).mean().item()

    loss0, err0 = val_loss(), sample_error()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, err1 = val_loss(), sample_error()
    assert loss1 < 0.5 * loss0, (loss0, loss1)
    assert err1 < max_ratio * err0, (err0, err1)


def _gaussian_data_fn(proc: GaussianDiffusion, mu: float, s: float):
    """The exact eps-prediction for data x_0 ~ N(mu, s^2) per pixel: E[x_0 | x_t] = mu + a s^2 / (a^2 s^2 + sig^2)
    (x_t - a mu), eps = (x_t - a E[x_0 | x_t]) / sig. Its probability-flow ODE has a closed-form end point."""
    def fn(x, t):
        a, sig = proc._signal_noise(t, x)
        x0 = mu + a * s ** 2 / (a ** 2 * s ** 2 + sig ** 2) * (x - a * mu)
        return (x - a * x0) / sig
    return fn


def test_dpm_solver_is_ddim_at_first_order_and_beats_it_at_second():
    proc = GaussianDiffusion(cosine_beta_schedule(1000), prediction="eps")
    mu, s = 0.3, 0.15
    fn, shape = _gaussian_data_fn(proc, mu, s), (64, 1, 4, 4)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    a_T, sig_T = proc.alphas_cumprod[-1].item() ** 0.5, (1 - proc.alphas_cumprod[-1].item()) ** 0.5
    exact = mu + s * (x_T - a_T * mu) / (a_T ** 2 * s ** 2 + sig_T ** 2) ** 0.5   # the ODE's end point, in closed form
    ddim = {n: proc.ddim_sample(fn, shape, steps=n, x_T=x_T) for n in (5, 10, 50)}
    dpm = {n: proc.dpm_solver_sample(fn, shape, steps=n, x_T=x_T) for n in (5, 10, 20)}
    ts = proc.lambda_timesteps(10)
    assert len(set(ts)) == 10 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    first = proc.dpm_solver_sample(fn, shape, steps=10, x_T=x_T, order=1)
    assert torch.allclose(first, proc.ddim_sample(fn, shape, x_T=x_T, timesteps=ts), atol=1e-5)  # order 1 is DDIM
    err = lambda x: float((x - exact).abs().max())  # noqa: E731
    assert err(dpm[5]) < err(ddim[5]) and err(dpm[10]) < err(ddim[10]) / 4
    assert err(dpm[10]) < err(ddim[50])                               # 10 steps of it beat DDIM-50
    assert err(dpm[20]) < 0.02 and err(first) > 2 * err(dpm[10])     # and the second order is what does it


def test_dpm_solver_through_the_model_and_its_controls():
    model = DDPM(tiny_config(num_classes=3)).eval()
    assert model.plan(sampler="dpm++")["steps"] == 20
    x = model.sample(2, cond=1, sampler="dpm++", steps=4, generator=torch.Generator().manual_seed(0))
    y = model.sample(2, cond=1, sampler="dpm++", steps=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 8, 8) and torch.equal(x, y)
    with pytest.raises(Exception, match="eta"):
        model.sample(2, sampler="dpm++", eta=0.5)
