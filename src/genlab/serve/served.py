"""A model as the server holds it (`Served`), and the checks before a job is queued (a 422 naming the field).
The kinds' routes (genlab.kinds.*.serve) build on these; genlab.serve.workers loads the runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from fastapi.exceptions import RequestValidationError

from genlab.errors import ControlError
from genlab.models.controls import Control, check


def invalid(field_name: str, msg: str) -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming the body field."""
    return RequestValidationError([{"loc": ("body", field_name), "msg": msg, "type": "value_error"}])


@dataclass
class Served:
    """A loaded run, with everything the routes need precomputed (requests never read the run folder)."""
    name: str
    model: torch.nn.Module
    family: str
    kind: Any                      # its genlab.kinds.base.Kind
    dataset: str
    classes: list[str]
    controls: dict[str, Control]
    metrics: dict[str, float | None]
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def routes(self) -> list[str]:
        return [r.name for r in self.kind.routes if r.applies(self.model)]

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model.config, "num_classes", 0) or 0)

    def info(self) -> dict:
        return {"name": self.name, "family": self.family, "kind": self.kind.name, "dataset": self.dataset,
                **self.kind.info(self.model), "classes": self.classes,
                "label_required": self.model.label_required, "latent": "latent" in self.model.CAPABILITIES,
                "routes": self.routes, "controls": {k: c.describe() for k, c in self.controls.items()},
                "metrics": self.metrics}


def check_range(s: Served, values: dict[str, Any]) -> None:
    """Each value within the range or choices of this model's control of its name (the names must be controls)."""
    try:
        check(s.controls, **values)
    except ControlError as e:
        raise invalid(e.field, f"{s.name}: {e}") from None


def check_label(s: Served, label: int | None) -> None:
    if label is not None and not s.num_classes:
        raise invalid("label", f"{s.name} was trained without labels; leave label out")
    if label is not None and label >= s.num_classes:
        raise invalid("label", f"label {label} is out of range; {s.name} knows 0..{s.num_classes - 1}")
    if label is None and s.model.label_required:
        raise invalid("label", f"{s.name} is a class-conditional {s.family}: give a label 0..{s.num_classes - 1}")


def sampling_controls(s: Served, req, fields: tuple[str, ...]) -> dict[str, Any]:
    """The request's sampling controls (its `fields` that are set) checked against this model and resolved by its
    `plan` (defaults filled in, so equal settings share a batch and the provenance records what was used), each
    resolved value within this server's limits."""
    given = {k: getattr(req, k) for k in fields if k in req.model_fields_set and getattr(req, k) is not None}
    for key in given:
        if key not in s.controls:
            valid = ", ".join(s.controls) or "none"
            raise invalid(key, f"{key} is not a control of {s.family} models (valid: {valid})")
    check_range(s, given)
    try:
        plan = s.model.plan(**given, labelled=getattr(req, "label", None) is not None)   # image2image has none
    except ControlError as e:
        raise invalid(e.field, str(e)) from None
    for key, value in plan.items():  # the resolved values within this server's limits (e.g. all T steps)
        c = s.controls.get(key)
        if c is not None and c.max is not None and value is not None and value > c.max:
            raise invalid(key if key in given else next(iter(given), key),
                          f"{value} {key} is over this server's limit of {c.max}")
    return plan


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Abandoned(RuntimeError):
    """Every request of a batch has gone (timed out or disconnected): stop working for nobody."""


def stop_if_abandoned(jobs: list) -> None:
    if all(j.cancelled for j in jobs):
        raise Abandoned(f"all {len(jobs)} requests of this batch have gone")
