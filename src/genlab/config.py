"""Typed configuration: dataclasses, a JSON round trip and dotted `key=value` overrides.

A run is described by one `RunConfig`: the family name, the family's model config, the data
config and the training config. Everything is plain dataclasses so that the resolved config can be
written to `config.json` and read back without pickles or `exec`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from genlab.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "digits"       # built-in name, image folder, MNIST IDX folder/file or .npz file
    image_size: int = 0        # 0 keeps the native size; otherwise resize (and pad) to this square size
    val_fraction: float = 0.1  # held out deterministically for validation and evaluation
    flip: bool = False         # random horizontal flips during training
    conditional: bool = False  # train with class labels
    count: int = 6000          # images to draw for procedural datasets (shapes)
    seed: int = 0              # seeds procedural data and the train/validation split
    tokenizer: str = "char"    # char | bpe (text families); music runs always use the music tokenizer
    vocab_size: int = 2000     # BPE vocabulary size (text families)
    memory_budget_gb: float = 4.0  # image data whose headers claim more memory than this is refused before loading
    sample_rate: int = 8000    # audio: clips are resampled to this rate (Hz)
    clip_seconds: float = 1.0  # audio: every clip is trimmed or padded to this length
    time_shift: float = 0.0    # audio augmentation: random shift of up to this many seconds (0 = off)
    gain_db: float = 0.0       # audio augmentation: random gain of up to +-this many dB (0 = off)
    noise_snr_db: float = 0.0  # audio augmentation: white noise at this signal-to-noise ratio in dB (0 = off)
    speed: float = 0.0         # audio augmentation: random speed change of up to +-this fraction (0 = off)
    transpose: str = "c"       # music: c (every piece to C major / A minor) | none | augment (all keys, training)
    classes: list[str] = field(default_factory=list)  # images: keep only these classes (names), e.g. 8,9; [] = all
    per_class: int = 0         # images: at most this many training images per class (few-shot); 0 = all
    per_class_seed: int = -1   # images: which ones data.per_class keeps (the split stays data.seed's); -1 = data.seed
    frames: int = 16           # video: frames per clip
    fps: float = 8.0           # video: every source is resampled to this frame rate
    crop_frames: int = 0       # video: clips are read this many frames longer, and training takes a random window
    objects: int = 1           # video built-ins: objects per clip (1 or 2; in one clip they share the class)
    motion_label: bool = False # moving-shapes: the label is the shape and its direction of motion (16 classes)
    max_seconds: float = 600.0 # video: a file longer than this is refused before it is decoded
    direction: str = "AtoB"    # image pairs: AtoB translates A into B; BtoA the other way
    source_digits: str = "digits"  # moving-digits: digits (scikit-learn's, built in) | mnist (after data fetch)


@dataclass
class TrainConfig:
    steps: int = 2000          # optimizer steps (upper bound when `minutes` is set)
    minutes: float = 0.0       # wall-clock budget; 0 = none
    batch_size: int = 64       # per process (per rank under torchrun)
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0     # max global gradient norm; 0 = off
    ema: float = 0.0           # EMA decay of weights, e.g. 0.999; 0 = off
    accum_steps: int = 1       # gradient accumulation micro-batches per step
    precision: str = "fp32"    # fp32 | bf16 (autocast)
    seed: int = 0
    log_every: int = 25
    val_every: int = 250
    sample_every: int = 500
    ckpt_every: int = 500
    threads: int = 0           # torch intra-op threads; 0 = torch's default
    progress_every: float = 30.0  # seconds between plain progress lines when the output is not a terminal


@dataclass
class InitConfig:
    """Where a run's weights started (`genlab train --init-from RUN`); empty for a run trained from scratch."""

    run: str = ""              # the source run folder, relative to this run's folder
    weights: str = "ema"       # ema (when the source has them) | raw
    sha256: str = ""           # SHA-256 of the source's model.safetensors, checked whenever it is read again


@dataclass
class AdapterConfig:
    """Parameter-efficient adaptation (`--adapter lora`); type "none" trains the whole model."""

    type: str = "none"         # none | lora (Hu et al. 2021)
    rank: int = 4              # r of B (out x r) A (r x in)
    alpha: float = 0.0         # the update is scaled by alpha / r; 0 = alpha is r (a scale of 1)
    freeze: bool = True        # train only the adapters (and re-initialised label tensors); the run then saves
                               # only those, and loading reads the rest from the base run


@dataclass
class CompressConfig:
    """What `genlab compress` did to a run's weights (loading reads it: int8 weights are rebuilt as int8 layers)."""

    prune: float = 0.0         # share of each layer's weights set to zero by magnitude (0 = none)
    structured: bool = False   # prune whole hidden units of the Transformer MLPs (a narrower, faster model)
    quantize: str = "none"     # none | int8 (dynamic int8 Linear and LSTM layers, torch.ao.quantization)


@dataclass
class RunConfig:
    family: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    version: str = ""
    init: InitConfig = field(default_factory=InitConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)


SECTIONS = ("model", "data", "train", "init", "adapter", "compress")  # the dotted keys' first parts
ADAPTERS = ("none", "lora")


PRECISIONS = ("fp32", "bf16")


def validate_train(cfg: TrainConfig) -> None:
    """Reject values that would fail later and far from their cause."""
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"train.precision={cfg.precision!r}; expected one of {', '.join(PRECISIONS)}")
    for name in ("steps", "batch_size", "accum_steps", "log_every", "val_every", "sample_every", "ckpt_every"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"train.{name}={getattr(cfg, name)}; expected a positive integer")
    if cfg.lr <= 0:
        raise ConfigError(f"train.lr={cfg.lr}; expected a positive learning rate")
    if not 0 <= cfg.ema < 1:
        raise ConfigError(f"train.ema={cfg.ema}; expected a decay in [0, 1) (0 turns EMA off)")
    if cfg.minutes < 0:
        raise ConfigError(f"train.minutes={cfg.minutes}; expected >= 0 (0 = no wall budget)")


def validate_adaptation(cfg: RunConfig) -> None:
    if cfg.adapter.type not in ADAPTERS:
        raise ConfigError(f"adapter.type={cfg.adapter.type!r}; expected one of {', '.join(ADAPTERS)}")
    if cfg.init.weights not in ("ema", "raw"):
        raise ConfigError(f"init.weights={cfg.init.weights!r}; expected ema or raw")
    if cfg.adapter.type != "none" and not cfg.init.run:
        raise ConfigError("--adapter lora adapts a trained run: pass --init-from RUN (the base run)")


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain JSON-able dict."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, data: dict) -> Any:
    """Plain dict (a run's config.json section) -> dataclass `cls`, checking keys and types (nested dataclasses
    included). A key the dict lacks takes the class's BEFORE value when it has one (a key added after runs were
    written, whose new default would change what those runs are), else the field's default."""
    hints = typing.get_type_hints(cls)
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - valid
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {sorted(unknown)}; valid keys: {', '.join(sorted(valid))}")
    kwargs = {k: v for k, v in getattr(cls, "BEFORE", {}).items() if k not in data}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[name] = from_dict(tp, value)
        else:
            kwargs[name] = _coerce(value, tp, name)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and where lossless, convert) `value` to type `tp`; raise ConfigError otherwise."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={value!r}; expected {tp}")
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}; expected a list")
        return [_coerce(v, inner, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}={value!r}; expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}; expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}; expected an integer")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}={value!r}; expected a number")
        if not math.isfinite(number):  # no setting means anything at inf or nan; they fail far from here
            raise ConfigError(f"{key}={value!r}; expected a finite number")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r}; expected a string")
    return value


def _valid_keys(cfg: RunConfig) -> list[str]:
    keys = []
    for section in SECTIONS:
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(getattr(cfg, section))]
    return keys


def set_key(cfg: RunConfig, key: str, value: Any) -> None:
    """Set one dotted key (`model.latent_dim`) on a RunConfig, type-checked."""
    section, _, name = key.partition(".")
    target = getattr(cfg, section, None) if section in SECTIONS else None
    if target is None or not name or name not in {f.name for f in dataclasses.fields(target)}:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(_valid_keys(cfg))}")
    hint = typing.get_type_hints(type(target))[name]
    setattr(target, name, _coerce(value, hint, key))


def as_overrides(section: str, obj: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """`--set` strings that give a config section `obj`'s values (lists comma-joined, empty ones left out)."""
    return [f"{section}.{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in to_dict(obj).items()
            if k not in skip and v != []]


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `key=value` strings (the CLI's `--set`) in order."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. model.latent_dim=16")
        set_key(cfg, key.strip(), value.strip())
    return cfg


def apply_preset(cfg: RunConfig, presets: dict[str, dict[str, Any]], name: str) -> RunConfig:
    """Apply a named preset (a dict of dotted keys) from the family's PRESETS."""
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r} for {cfg.family}; choose from {', '.join(presets)}")
    for key, value in presets[name].items():
        set_key(cfg, key, value)
    return cfg


def run_config_to_json(cfg: RunConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def run_config_from_dict(data: dict, model_cls: type) -> RunConfig:
    """Rebuild a RunConfig whose `model` section is of the family's config class."""
    return RunConfig(
        family=data["family"],
        model=from_dict(model_cls, data["model"]),
        data=from_dict(DataConfig, data.get("data", {})),
        train=from_dict(TrainConfig, data.get("train", {})),
        version=data.get("version", ""),
        init=from_dict(InitConfig, data.get("init", {})),
        adapter=from_dict(AdapterConfig, data.get("adapter", {})),
        compress=from_dict(CompressConfig, data.get("compress", {})),
    )
