"""The kinds of data (docs/design.md, "Kinds"): name -> Kind. Each family's registry entry names its kind; code
outside a kind asks the run's kind (`of(family)`) and never which kind it holds.

Built in: image, lm (token streams), pairs (text pairs), labels (labelled texts). Another installed package adds a
kind through an entry point in the group `genlab.kinds` whose object is a genlab.kinds.base.Kind.
"""

from __future__ import annotations

from pathlib import Path

from genlab import registry
from genlab.config import RunConfig
from genlab.errors import ConfigError
from genlab.kinds.base import Kind, Route
from genlab.kinds.image import IMAGE
from genlab.kinds.text import LABELS, LM, PAIRS

ENTRY_POINTS = "genlab.kinds"
KINDS: dict[str, Kind] = {k.name: k for k in (IMAGE, LM, PAIRS, LABELS)}
KINDS.update({k.name: k for k in registry.plugins(ENTRY_POINTS, Kind, KINDS)})


def get(name: str) -> Kind:
    if name not in KINDS:
        raise ConfigError(f"unknown kind of data {name!r}; installed kinds: {', '.join(KINDS)} (a plug-in kind comes "
                          f"from a package with an entry point in the group {ENTRY_POINTS!r})")
    return KINDS[name]


def of(family: str) -> Kind:
    """The kind of data `family` trains on."""
    return get(registry.get(family).kind)


def prepare(cfg: RunConfig, run_dir: Path, *, resume: bool):
    """The data for cfg.family, prepared by its kind (what genlab.train hands the trainer)."""
    return of(cfg.family).prepare(cfg, run_dir, resume=resume)


def routes() -> dict[str, Route]:
    """Every kind's routes by name; two kinds may not claim the same route."""
    out: dict[str, Route] = {}
    for kind in KINDS.values():
        for route in kind.routes:
            if route.name in out and out[route.name] is not route:
                raise ConfigError(f"the kinds {kind.name!r} and another both declare the route {route.name!r}")
            out[route.name] = route
    return out


def samplable() -> list[str]:
    """The families whose kind writes samples with `genlab sample`."""
    return [f.name for f in registry.FAMILIES.values() if f.model_cls.generative
            and f.kind in KINDS and type(KINDS[f.kind]).write_samples is not Kind.write_samples]
