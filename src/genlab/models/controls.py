"""Sampling controls, declared once (docs/design.md, the family contract).

A family lists its controls in `CONTROLS`: name, type, default, range or choices, and a help line.
The CLI builds its flags from them, the server its request checks and the `controls` of
GET /v1/models, and the family's own `sample` checks its arguments against them. Bounds that
depend on a model's config (diffusion steps up to T, top_k up to the vocabulary) are filled in by
the family's `controls()`; a server narrows them further with its own limits (`bounded`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable

from genlab.errors import ControlError

TYPE_NAMES = {int: "int", float: "float", str: "choice"}  # the "type" that GET /v1/models reports


@dataclass(frozen=True)
class Control:
    """One sampling control. `min` and `max` are inclusive (None = unbounded); a str control takes
    one of `choices`. A default of None means "off unless given"."""
    name: str
    type: type
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def check(self, value: Any) -> None:
        """Raise ControlError naming this control when `value` is outside its choices or range
        (NaN is outside every range). None, the "not given" value, passes."""
        if value is None:
            return
        if self.choices and value not in self.choices:
            raise ControlError(self.name, f"{self.name}={value!r}; expected one of {', '.join(self.choices)}")
        below = self.min is not None and not value >= self.min
        above = self.max is not None and not value <= self.max
        if below or above:
            raise ControlError(self.name, f"{self.name}={value}; expected {self.range()} ({self.help})")

    def range(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min}..{self.max}"
        return f">= {self.min}" if self.min is not None else f"<= {self.max}"

    def bounded(self, most: float) -> Control:
        """This control with its maximum lowered to `most` (a server's limit)."""
        return replace(self, max=most if self.max is None else min(self.max, most))

    def describe(self) -> dict[str, Any]:
        """The JSON object GET /v1/models reports for this control."""
        if self.choices:
            return {"type": TYPE_NAMES[self.type], "default": self.default, "choices": list(self.choices)}
        return {"type": TYPE_NAMES[self.type], "default": self.default, "min": self.min, "max": self.max}


def by_name(controls: Iterable[Control]) -> dict[str, Control]:
    return {c.name: c for c in controls}


def check(controls: dict[str, Control], **values: Any) -> None:
    """Check each value against the control of its name (every name must be declared)."""
    for name, value in values.items():
        controls[name].check(value)


def union(declared: dict[str, Iterable[Control]]) -> dict[str, tuple[Control, list[str]]]:
    """The controls of several families ({family: controls}) by name, each with the families that
    declare it. Families that share a control declare the same type (one vocabulary, docs/design.md)."""
    out: dict[str, tuple[Control, list[str]]] = {}
    for family, controls in declared.items():
        for c in controls:
            first, families = out.setdefault(c.name, (c, []))
            if first.type is not c.type:
                raise TypeError(f"control {c.name!r} is {first.type.__name__} in {families[0]} "
                                f"but {c.type.__name__} in {family}")
            families.append(family)
    return out
