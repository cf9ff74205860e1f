"""Typed configs: presets, dotted overrides, type checks and the JSON round trip."""

import json

import pytest

from genlab.api import build_config, load_config
from genlab.config import ConfigError, apply_overrides, run_config_from_dict, run_config_to_json
from genlab.models.autoencoder import VAEConfig


def test_overrides_are_typed_and_applied_after_the_preset():
    cfg = build_config("vae", preset="tiny", overrides=["model.latent_dim=12", "train.lr=3e-4", "data.flip=true"])
    assert cfg.model.latent_dim == 12 and cfg.model.width == 16      # override, then preset value kept
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.data.flip is True


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        build_config("vae", overrides=["model.latnt_dim=3"])
    assert "model.latnt_dim" in str(e.value) and "model.latent_dim" in str(e.value)


@pytest.mark.parametrize("item, words", [("model.latent_dim=abc", "expected an integer"),
                                         ("train.lr=fast", "expected a number"),
                                         ("data.flip=maybe", "true or false"),
                                         ("model.latent_dim", "key=value")])
def test_bad_values_are_rejected_with_the_expected_type(item, words):
    cfg = build_config("vae")
    with pytest.raises(ConfigError, match=words):
        apply_overrides(cfg, [item])


def test_unknown_preset_and_family():
    with pytest.raises(ConfigError, match="tiny, small, base"):
        build_config("vae", preset="huge")
    with pytest.raises(ConfigError, match="available"):
        build_config("transformer-xl")


def test_json_round_trip_keeps_every_field():
    cfg = build_config("vae", preset="small", overrides=["model.beta=0.5", "train.precision=bf16"])
    back = run_config_from_dict(json.loads(run_config_to_json(cfg)), VAEConfig)
    assert back == cfg


def test_minutes_alone_lets_the_clock_decide():
    cfg = build_config("vae", minutes=2)
    assert cfg.train.minutes == 2 and cfg.train.steps >= 10**9
    assert build_config("vae", minutes=2, steps=50).train.steps == 50


def test_load_config_of_a_foreign_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="config.json is missing"):
        load_config(tmp_path)


def test_as_overrides_round_trips_a_section_lists_included():
    from genlab.config import DataConfig, RunConfig, apply_overrides, as_overrides

    data = DataConfig(name="digits", classes=["8", "9"], per_class=10, image_size=16)
    cfg = RunConfig("vae", None)
    apply_overrides(cfg, as_overrides("data", data))
    assert cfg.data == data
    assert not any(o.startswith("data.per_class=") for o in as_overrides("data", data, skip=("per_class",)))
    assert "data.classes=8,9" in as_overrides("data", data)
