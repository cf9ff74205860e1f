"""The kind contract (docs/design.md, "Kinds"): everything that depends only on the kind of data a family
trains on. genlab asks a run's kind, never which kind it is:

  prepare(cfg, run_dir, resume=)      the data split and loaders, the model config sized from the data, the preview
  datasets()                          its built-in datasets, for `genlab data list`
  write_samples(model, out, ...)      `genlab sample`: the samples as a file (PNG, npz, txt, ...) with provenance
  evaluate(run_dir, ...)              `genlab eval`: its judge and metrics; writes eval.json
  card                                the model card's wording (what its outputs are, its metric caveats)
  serve() -> routes, info(model),     the server: its routes (request schema, handler, batched run), its fields
  provenance(model)                   in GET /v1/models, the provenance its responses carry
  tiny(cfg), example(cfg, n, g), sample_kwargs(model)   the contract suite's inputs (tests/test_contract.py)

A kind is an instance of a Kind subclass, registered in genlab.kinds (built-in) or through the entry-point
group `genlab.kinds` (plug-ins). Families name their kind in their registry entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from genlab.config import DataConfig
from genlab.errors import UsageError
from genlab.provenance import image_metadata


def sample_labels(model, n: int, label: int | None):
    """`genlab sample`'s labels: (cond for model.sample, what the provenance shows). A conditional run without
    --label draws every class in turn (label i % K); otherwise the label as given (None: unconditional)."""
    k = getattr(model.config, "num_classes", 0)
    if k and label is None:
        return torch.arange(n) % k, f"i % {k} (every class in turn)"
    return label, label


@dataclass
class Route:
    """One HTTP route of a kind: POST /v1/models/{model}/{name}.

    request: the pydantic body; handle(state, served, req, http_request) -> response (async, in the server's
    event loop: checks the request, then `await state.run(served.name, name, key, rows, job)` queues a job);
    run(served, jobs) -> one result per job (on the model's worker thread, jobs batched by key);
    applies(model) -> whether a model of this kind answers it (e.g. only latent models walk). The page has a
    panel for each built-in route, and a generic form built from the request schema for any other."""
    name: str
    request: type
    handle: Callable
    run: Callable
    applies: Callable[[Any], bool] = lambda model: True
    summary: str = ""


@dataclass(frozen=True)
class CardText:
    """The model card's wording for a kind."""
    noun: str                                         # what its generators make: "images", "text"
    limitations: tuple[str, ...] = ()                 # metric caveats and other limits of this kind
    uses: tuple[str, ...] = ()                        # extra intended-use lines
    judged: bool = False                              # its classifiers double as the evaluation's judge


@dataclass
class Kind:
    """A kind of data and everything that depends only on it (see the module docstring)."""
    name: str
    summary: str                                      # "images", "text pairs", ... (data list, docs)
    card: CardText
    serve: Callable[[], tuple[Route, ...]] = tuple    # its routes, imported when asked (FastAPI loads only
                                                      # for the server, not for every command)
    sample_suffix: str = ".png"                       # `genlab sample`'s default output
    conditioning: str = "none"                        # what a request conditions on (GET /v1/models)
    hosts: tuple[str, ...] = ()                       # other kinds whose families it trains on its own data
    extras: dict = field(default_factory=dict)

    # ---- data and training ------------------------------------------------------------------------
    def prepare(self, cfg, run_dir: Path, *, resume: bool):
        raise NotImplementedError(f"the {self.name} kind must implement prepare(cfg, run_dir, resume=)")

    def datasets(self) -> dict[str, str]:
        """Its built-in datasets: name -> one line."""
        return {}

    def claims(self, data: str | DataConfig) -> bool:
        """Whether `data` (a --data value, or a run's data config) is this kind's: a kind that `hosts` another
        takes that kind's families for the data it claims (genlab.kinds.of)."""
        return (data.name if isinstance(data, DataConfig) else data) in self.datasets()

    # ---- sampling and evaluation ------------------------------------------------------------------
    def write_samples(self, model, out: str, *, n: int, seed: int, label: int | None, controls: dict,
                      settings: dict) -> str:
        """`genlab sample`: draw n samples with `seed` and write them to `out`; return the line to print. A kind
        whose extras name a "prompt" (what it is) also takes `prompt=`: the path of `genlab sample --prompt`."""
        raise UsageError(f"{model.family} runs ({self.summary}) have no `genlab sample`; see `genlab --help`")

    def evaluate(self, run_dir: Path, **kwargs: Any) -> dict:
        raise UsageError(f"{self.summary} runs have no evaluation yet")

    # ---- serving ----------------------------------------------------------------------------------
    @property
    def routes(self) -> tuple[Route, ...]:
        return self.serve()

    def info(self, model) -> dict:
        """This kind's fields in a model's entry of GET /v1/models (beside name, family, routes, controls...)."""
        return {"conditioning": self.conditioning}

    def provenance(self, model) -> dict:
        """The provenance every response of this model carries (the image kind: its PNG text chunks)."""
        meta = image_metadata(model, seed=None, settings={})
        return {**{k: v for k, v in meta.items() if k != "DigitalSourceType"},
                "Comment": f"AI-generated {self.card.noun} made with genlab", "genlab:kind": self.card.noun}

    def server_controls(self, controls: dict, settings) -> dict:
        """The model's controls as the server offers them (a kind may change a default for interactive use)."""
        return controls

    # ---- the contract suite -----------------------------------------------------------------------
    def tiny(self, cfg, *, labelled: bool) -> None:
        """Set the data-derived fields of a model config for the contract suite's small examples."""
        raise NotImplementedError

    def example(self, cfg, n: int, generator: torch.Generator) -> dict:
        """A random training batch of n items for a model of config `cfg` (as `tiny` sized it)."""
        raise NotImplementedError

    def sample_kwargs(self, model) -> dict:
        """The arguments (cond, controls) of a small seeded `model.sample(n, **kwargs)` call in the contract."""
        return {}
