"""The family contract (docs/design.md), checked for every registered family."""

import inspect

import pytest
import torch

from genlab.registry import FAMILIES, model_config
from genlab.runs import load_weights, save_checkpoint, Checkpoint

FAMILY_NAMES = [f.name for f in FAMILIES.values() if f.kind == "image"]


def build(name: str, conditional: bool = False, image_size: int = 8, channels: int = 1):
    fam = FAMILIES[name]
    labelled = conditional or not getattr(fam.model_cls, "generative", True)
    cfg = model_config(name, "tiny", in_channels=channels, image_size=image_size)
    if hasattr(cfg, "num_classes"):
        cfg.num_classes = 10 if labelled else 0
    torch.manual_seed(0)
    return fam.model_cls(cfg)


def batch(n=8, image_size=8, channels=1):
    g = torch.Generator().manual_seed(1)
    return {"x": torch.rand(n, channels, image_size, image_size, generator=g) * 2 - 1,
            "y": torch.arange(n) % 10}


class SimpleStepper:
    """What the trainer passes to train_step, without DDP or accumulation."""

    def __init__(self, model, train_cfg):
        self.model = model
        self.groups = model.param_groups(train_cfg)
        self.opts = {k: torch.optim.AdamW(g["params"], lr=g["lr"]) for k, g in self.groups.items()}

    def forward(self, b, **kw):
        return self.model(b, **kw)

    def step(self, group, out):
        out["loss"].backward()
        self.opts[group].step()
        self.opts[group].zero_grad()


def test_registry_lists_the_spine_families():
    assert {"ae", "vae", "classifier"} <= set(FAMILIES)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("conditional", [False, True])
def test_loss_is_finite_and_backward_reaches_every_parameter(name, conditional):
    model = build(name, conditional)
    out = model.loss(batch())
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if getattr(model, "param_groups", None) and len(model.param_groups(_train())) > 1:
        pytest.skip("multi-optimizer families route gradients per phase (tested in their own file)")
    assert not missing, f"no gradient reached {missing}"


def _train():
    from genlab.config import TrainConfig
    return TrainConfig()


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_train_step_lowers_the_loss_on_a_fixed_batch(name):
    model = build(name)
    stepper = SimpleStepper(model, _train())
    b = batch()
    torch.manual_seed(0)
    first = model.loss(b)["loss"].item()
    for _ in range(30):
        torch.manual_seed(0)
        model.train_step(b, stepper)
    torch.manual_seed(0)
    assert model.loss(b)["loss"].item() < first


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("image_size, channels", [(8, 1), (32, 3), (28, 1)])
def test_sample_shape_range_and_seeded_determinism(name, image_size, channels):
    model = build(name, conditional=True, image_size=image_size, channels=channels).eval()
    if not getattr(model, "generative", True):
        probs = model.predict(batch(4, image_size, channels)["x"])
        assert probs.shape == (4, 10) and torch.allclose(probs.sum(1), torch.ones(4))
        return
    a = model.sample(4, cond=3, generator=torch.Generator().manual_seed(7))
    b = model.sample(4, cond=3, generator=torch.Generator().manual_seed(7))
    c = model.sample(4, cond=3, generator=torch.Generator().manual_seed(8))
    assert a.shape == (4, channels, image_size, image_size)
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", [n for n in FAMILY_NAMES if getattr(FAMILIES[n].model_cls, "generative", True)])
def test_sample_signature_follows_the_shared_vocabulary(name):
    params = inspect.signature(FAMILIES[name].model_cls.sample).parameters
    assert list(params)[:2] == ["self", "n"]
    assert params["cond"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["generator"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("name", [n for n in FAMILY_NAMES if getattr(FAMILIES[n].model_cls, "generative", True)])
def test_bad_labels_and_unknown_controls_are_clear_errors(name):
    model = build(name, conditional=True).eval()
    with pytest.raises(ValueError, match="out of range"):
        model.sample(2, cond=10)
    with pytest.raises(TypeError, match="bogus"):
        model.sample(2, cond=1, bogus=3)
    with pytest.raises(ValueError, match="without labels"):
        build(name, conditional=False).eval().sample(2, cond=1)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_save_load_round_trip_through_safetensors(name, tmp_path):
    model = build(name, conditional=True)
    save_checkpoint(tmp_path, Checkpoint(1, model.state_dict(), None, {}, {}, {}))
    weights, ema = load_weights(tmp_path)
    fresh = build(name, conditional=True)
    torch.nn.init.zeros_(next(fresh.parameters()))
    fresh.load_state_dict(weights)
    assert ema is None
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k


# ---- text families --------------------------------------------------------------------------------

TEXT_NAMES = [f.name for f in FAMILIES.values() if f.kind != "image"]


def build_text(name: str):
    cfg = model_config(name, "tiny", vocab_size=40)
    if hasattr(cfg, "num_classes"):
        cfg.num_classes = 3
    torch.manual_seed(0)
    return FAMILIES[name].model_cls(cfg)


def text_batch(name: str):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 40, (4, 17), generator=g)
    kind = FAMILIES[name].kind
    if kind == "lm":
        return {"ids": ids}
    if kind == "pairs":
        return {"src": torch.cat([ids[:, :9], torch.full((4, 1), 2)], 1),
                "tgt": torch.cat([torch.ones(4, 1, dtype=torch.long), ids[:, 9:], torch.full((4, 1), 2)], 1)}
    return {"ids": ids, "y": torch.tensor([0, 1, 2, 0])}


def test_registry_lists_the_text_families():
    assert {"gpt", "lstm", "seq2seq", "textclf"} <= set(TEXT_NAMES)


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_text_loss_is_finite_backward_reaches_parameters_and_steps_lower_it(name):
    model = build_text(name)
    b = text_batch(name)
    out = model.loss(b)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad()
    stepper = SimpleStepper(model, _train())
    model.eval()  # no dropout: compare the same function before and after
    first = model.loss(b)["loss"].item()
    for _ in range(20):
        model.train_step(b, stepper)
    assert model.loss(b)["loss"].item() < first


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_text_sampling_is_seeded_and_shaped(name):
    model = build_text(name).eval()
    if not getattr(model, "generative", True):
        probs, weights = model.predict(text_batch(name)["ids"])
        assert probs.shape == (4, 3) and torch.allclose(weights.sum(1), torch.ones(4))
        return
    cond = [5, 6, 7]
    kw = dict(cond=cond, max_new_tokens=6, temperature=1.0)
    a = model.sample(3, generator=torch.Generator().manual_seed(7), **kw)
    b = model.sample(3, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a, b) and a.shape[0] == 3 and a.dtype == torch.long and a.max() < 40
    with pytest.raises(TypeError, match="bogus"):
        model.sample(1, cond=cond, bogus=1)


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_text_save_load_round_trip(name, tmp_path):
    model = build_text(name)
    save_checkpoint(tmp_path, Checkpoint(1, model.state_dict(), None, {}, {}, {}))
    fresh = build_text(name)
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    fresh.load_state_dict(load_weights(tmp_path)[0])
    model.eval(), fresh.eval()
    b = text_batch(name)
    torch.manual_seed(0)
    a = model.loss(b)["loss"]
    torch.manual_seed(0)
    assert torch.equal(a, fresh.loss(b)["loss"])
