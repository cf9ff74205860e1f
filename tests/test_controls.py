"""Sampling controls are declared once per family (genlab.models.controls): the CLI flags, what
GET /v1/models reports, and what the family's sample()/plan() accepts all come from that declaration."""

from __future__ import annotations

import math

import pytest
import torch
from fastapi.exceptions import RequestValidationError

from genlab import kinds, registry
from genlab.cli import build_parser, finite_float
from genlab.errors import ControlError
from genlab.models.base import Model
from genlab.serve.schemas import Settings
from genlab.serve.served import Served, check_range
from genlab.serve.workers import controls_of

GENERATORS = [name for name, f in registry.FAMILIES.items() if f.model_cls.CONTROLS]
FIELDS = {f: {"num_classes": 10, "timesteps": 20} for f in ("ddpm", "ldm", "audio-ddpm", "video-ddpm")}  # guidance


def tiny(family: str, **fields):
    return registry.get(family).model_cls(registry.model_config(family, "tiny", **fields))


def served(family: str, settings: Settings, **fields) -> Served:
    model = tiny(family, **fields)
    s = Served(family, model, family, kinds.of(family), "test", [], {}, {})
    s.controls = controls_of(s, settings)
    return s


def outside(c) -> list:
    """Values just outside the declared range."""
    step = (lambda v, d: v + d) if c.type is int else (lambda v, d: math.nextafter(v, d * math.inf))
    return ([step(c.min, -1)] if c.min is not None else []) + ([step(c.max, 1)] if c.max is not None else [])


def sample_with(model, **controls):
    """The family's own check of its controls: DDPM.plan (sampling itself would run every step), else sample."""
    if type(model).plan is not Model.plan:   # the diffusion families: plan() checks what sample() would
        return model.plan(**controls, labelled=True)
    short = "max_new_tokens" in model.controls() and "max_new_tokens" not in controls
    extra = {"max_new_tokens": 2} if short else {}
    cond = kinds.of(model.family).sample_kwargs(model, 1).get("cond")   # pix2pix: an input image
    return model.sample(1, cond=cond, generator=torch.Generator().manual_seed(0), **controls, **extra)


def test_cli_flags_are_the_image_families_declared_controls():
    image = {c.name: c for f in registry.FAMILIES.values() if f.kind == "image" for c in f.model_cls.CONTROLS}
    for command in ("sample", "eval"):
        parser = build_parser()._subparsers._group_actions[0].choices[command]
        flags = {a.dest: a for a in parser._actions if f"--{a.dest}" in a.option_strings and a.dest in image}
        assert set(flags) == set(image)
        for name, action in flags.items():
            c = image[name]
            assert action.type is (finite_float if c.type is float else c.type) and action.default is None
            assert c.help in action.help


@pytest.mark.parametrize("family", GENERATORS)
def test_v1_models_reports_the_declaration_within_the_server_limits(family):
    settings = Settings(max_steps=7, max_new_tokens=9)
    s = served(family, settings, **FIELDS.get(family, {}))
    reported = s.info()["controls"]
    declared = s.model.controls()
    assert list(reported) == list(declared) == [c.name for c in type(s.model).CONTROLS]
    for name, spec in reported.items():
        c = declared[name]
        assert spec["type"] == {int: "int", float: "float", str: "choice"}[c.type]
        if c.choices:
            assert spec == {"type": "choice", "default": c.default, "choices": list(c.choices)}
            continue
        assert spec["min"] == c.min
        limit = {"steps": settings.max_steps, "max_new_tokens": settings.max_new_tokens}.get(name)
        assert spec["max"] == (c.max if limit is None else limit if c.max is None else min(c.max, limit))
    if family == "ddpm":
        assert reported["steps"]["default"] == 20 and reported["steps"]["max"] == 7   # min(50, T), capped
    if registry.get(family).kind == "lm":
        assert reported["max_new_tokens"]["default"] == 9   # the text route's 100, within the limit


def test_guidance_is_a_control_of_conditional_ddpm_only():
    assert "guidance" not in tiny("ddpm").controls()
    assert "guidance" in tiny("ddpm", num_classes=10).controls()


@pytest.mark.parametrize("family", GENERATORS)
def test_a_value_just_outside_a_declared_range_is_refused_naming_the_control(family):
    s = served(family, Settings(), **FIELDS.get(family, {}))
    for name, c in s.model.controls().items():
        bounds = [b for b in (c.min, c.max) if b is not None]
        for value in bounds:  # the bounds themselves are accepted by both
            if not (family == "gan" and value == c.min):  # (0.05 is accepted, but slow to draw)
                sample_with(s.model, **{name: value})
            check_range(s, {name: value})
        for value in outside(c):
            with pytest.raises(ControlError) as e:
                sample_with(s.model, **{name: value})
            assert e.value.field == name and name in str(e.value)
            with pytest.raises(RequestValidationError) as e:
                check_range(s, {name: value})
            assert e.value.errors()[0]["loc"] == ("body", name)
        if c.choices:
            with pytest.raises(ControlError) as e:
                sample_with(s.model, **{name: "euler"})
            assert e.value.field == name


def test_server_limits_narrow_the_declared_range():
    s = served("ddpm", Settings(max_steps=5))
    check_range(s, {"steps": 5})
    with pytest.raises(RequestValidationError):
        check_range(s, {"steps": 6})
    s.model.plan(steps=6)  # the model itself takes up to T
