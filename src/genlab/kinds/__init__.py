"""The kinds of data (docs/design.md, "Kinds"): name -> Kind. Each family's registry entry names its kind; code
outside a kind asks the run's kind (`of(family)`) and never which kind it holds.

Built in: image, lm (token streams), pairs (text pairs), labels (labelled texts), audio (clips), music (note
events, hosting the lm kind's families), video (clips of frames), image-pairs (an input image and its target). Another installed package adds a kind through an entry point in the group `genlab.kinds` whose object is a genlab.kinds.base.Kind.
"""

from __future__ import annotations

from pathlib import Path

from genlab import registry
from genlab.config import DataConfig, RunConfig
from genlab.errors import ConfigError
from genlab.kinds.audio import AUDIO
from genlab.kinds.base import Kind, Route
from genlab.kinds.image import IMAGE
from genlab.kinds.imagepairs import IMAGE_PAIRS
from genlab.kinds.music import MUSIC
from genlab.kinds.text import LABELS, LM, PAIRS
from genlab.kinds.video import VIDEO

ENTRY_POINTS = "genlab.kinds"
KINDS: dict[str, Kind] = {k.name: k for k in (IMAGE, LM, PAIRS, LABELS, AUDIO, MUSIC, VIDEO, IMAGE_PAIRS)}
KINDS.update({k.name: k for k in registry.plugins(ENTRY_POINTS, Kind, KINDS)})


def get(name: str) -> Kind:
    if name not in KINDS:
        raise ConfigError(f"unknown kind of data {name!r}; installed kinds: {', '.join(KINDS)} (a plug-in kind comes "
                          f"from a package with an entry point in the group {ENTRY_POINTS!r})")
    return KINDS[name]


def of(family: str, data: str | DataConfig | None = None) -> Kind:
    """The kind of data a run of `family` on `data` (a --data value or a run's data config) holds: the family's
    own kind, unless another kind hosts the family's kind and claims the data (the music kind: language models
    trained on chorales)."""
    own = registry.get(family).kind
    if data is not None:
        for kind in KINDS.values():
            if own in kind.hosts and kind.claims(data):
                return kind
    return get(own)


def of_run(cfg: RunConfig) -> Kind:
    """The kind of a run, from its config."""
    return of(cfg.family, cfg.data)


def prepare(cfg: RunConfig, run_dir: Path, *, resume: bool):
    """The data for cfg.family, prepared by the run's kind (what genlab.train hands the trainer)."""
    return of_run(cfg).prepare(cfg, run_dir, resume=resume)


def routes() -> dict[str, Route]:
    """Every kind's routes by name; two kinds may not claim the same route."""
    out: dict[str, Route] = {}
    for kind in KINDS.values():
        for route in kind.routes:
            if route.name in out and out[route.name] is not route:
                raise ConfigError(f"the kinds {kind.name!r} and another both declare the route {route.name!r}")
            out[route.name] = route
    return out


def writes_samples(kind: Kind) -> bool:
    """Whether `genlab sample` can write this kind's samples (it implements write_samples)."""
    return type(kind).write_samples is not Kind.write_samples


def samplable() -> list[str]:
    """The generators whose own kind writes samples with `genlab sample`."""
    return [f.name for f in registry.FAMILIES.values() if f.model_cls.generative
            and f.kind in KINDS and writes_samples(KINDS[f.kind])]
