"""The family contract and the kind contract (docs/design.md), checked for every registered family and every
installed kind. The family tests take their inputs from the family's kind (Kind.tiny / example / sample_kwargs),
so a new family of a new kind is checked here with no edit to this file."""

import inspect

import pytest
import torch
from pydantic import BaseModel

from genlab import kinds
from genlab.config import TrainConfig
from genlab.kinds.base import Kind
from genlab.registry import FAMILIES, families_of, model_config
from genlab.runs import Checkpoint, load_weights, save_checkpoint

ALL = list(FAMILIES)
GENERATORS = [n for n in ALL if FAMILIES[n].model_cls.generative]


def build(name: str, conditional: bool = False):
    cfg = model_config(name, "tiny")
    kinds.of(name).tiny(cfg, labelled=conditional or not FAMILIES[name].model_cls.generative)
    torch.manual_seed(0)
    return FAMILIES[name].model_cls(cfg)


def batch(name: str, model, n: int = 8) -> dict:
    return kinds.of(name).example(model.config, n, torch.Generator().manual_seed(1))


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


# ---- every family ---------------------------------------------------------------------------------


def test_registry_lists_the_built_in_families():
    assert {"ae", "vae", "gan", "ddpm", "classifier", "gpt", "lstm", "seq2seq", "textclf"} <= set(FAMILIES)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("conditional", [False, True])
def test_loss_is_finite_and_backward_reaches_every_parameter(name, conditional):
    model = build(name, conditional)
    out = model.loss(batch(name, model))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if len(model.param_groups(TrainConfig())) > 1:
        pytest.skip("multi-optimizer families route gradients per phase (tested in their own file)")
    assert not missing, f"no gradient reached {missing}"


@pytest.mark.parametrize("name", ALL)
def test_train_step_lowers_the_loss_on_a_fixed_batch(name):
    model = build(name)
    stepper = SimpleStepper(model, TrainConfig())
    b = batch(name, model)
    torch.manual_seed(0)   # the same dropout masks and noise before and after
    first = model.loss(b)["loss"].item()
    for _ in range(30):
        torch.manual_seed(0)
        model.train_step(b, stepper)
    torch.manual_seed(0)
    assert model.loss(b)["loss"].item() < first


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip_through_safetensors(name, tmp_path):
    model = build(name, conditional=True)
    save_checkpoint(tmp_path, Checkpoint(1, model.state_dict(), None, {}, {}, {}))
    weights, ema = load_weights(tmp_path)
    fresh = build(name, conditional=True)
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    fresh.load_state_dict(weights)
    assert ema is None
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", GENERATORS)
def test_sampling_is_seeded_and_follows_the_shared_vocabulary(name):
    params = inspect.signature(FAMILIES[name].model_cls.sample).parameters
    assert list(params)[:2] == ["self", "n"]
    assert params["cond"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["generator"].kind is inspect.Parameter.KEYWORD_ONLY
    model = build(name, conditional=True).eval()
    kw = kinds.of(name).sample_kwargs(model, 3)
    a, b, c = (model.sample(3, generator=torch.Generator().manual_seed(s), **kw) for s in (7, 7, 8))
    assert len(a) == 3 and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(TypeError, match="bogus"):
        model.sample(1, **{**kinds.of(name).sample_kwargs(model, 1), "bogus": 1})


@pytest.mark.parametrize("name", [n for n in ALL if n not in GENERATORS])
def test_a_model_that_does_not_generate_has_no_sample(name):
    assert not hasattr(build(name), "sample")


# ---- every kind -----------------------------------------------------------------------------------


def test_every_family_names_an_installed_kind():
    assert {FAMILIES[n].kind for n in ALL} <= set(kinds.KINDS)


@pytest.mark.parametrize("kind", list(kinds.KINDS.values()), ids=list(kinds.KINDS))
def test_a_kind_implements_its_contract(kind):
    for method in ("prepare", "tiny", "example"):
        assert getattr(type(kind), method) is not getattr(Kind, method), f"{kind.name} lacks {method}"
    assert kind.summary and kind.card.noun
    for route in kind.routes:
        assert issubclass(route.request, BaseModel) and inspect.iscoroutinefunction(route.handle)
        assert callable(route.run) and route.summary


def test_no_two_kinds_claim_the_same_route():
    names = [r.name for k in kinds.KINDS.values() for r in k.routes]
    assert len(names) == len(set(names)) and set(kinds.routes()) == set(names)


# ---- the image kind -------------------------------------------------------------------------------

IMAGE = families_of("image")


def image_model(name: str, image_size: int, channels: int):
    cfg = model_config(name, "tiny", in_channels=channels, image_size=image_size)
    if hasattr(cfg, "num_classes"):
        cfg.num_classes = 10
    torch.manual_seed(0)
    return FAMILIES[name].model_cls(cfg)


@pytest.mark.parametrize("name", IMAGE)
@pytest.mark.parametrize("image_size, channels", [(8, 1), (32, 3), (28, 1)])
def test_images_have_the_data_shape_and_range(name, image_size, channels):
    model = image_model(name, image_size, channels).eval()
    if not model.generative:
        probs = model.predict(torch.rand(4, channels, image_size, image_size) * 2 - 1)
        assert probs.shape == (4, 10) and torch.allclose(probs.sum(1), torch.ones(4))
        return
    a = model.sample(4, cond=3, generator=torch.Generator().manual_seed(7))
    assert a.shape == (4, channels, image_size, image_size)
    assert a.min() >= -1 and a.max() <= 1


@pytest.mark.parametrize("name", [n for n in IMAGE if n in GENERATORS])
def test_bad_labels_are_clear_errors(name):
    model = build(name, conditional=True).eval()
    with pytest.raises(ValueError, match="out of range"):
        model.sample(2, cond=10)
    with pytest.raises(ValueError, match="without labels"):
        build(name, conditional=False).eval().sample(2, cond=1)


# ---- the labelled-text kind -----------------------------------------------------------------------


@pytest.mark.parametrize("name", families_of("labels"))
def test_text_classifiers_return_probabilities_and_attention_weights(name):
    model = build(name).eval()
    probs, weights = model.predict(batch(name, model, 4)["ids"])
    assert probs.shape == (4, model.config.num_classes) and torch.allclose(weights.sum(1), torch.ones(4))
