"""The server's settings and what every request body shares (pydantic: a wrong type or a value out of its fixed
range is a 422 naming the field). The bodies themselves belong to the kinds' routes (genlab.kinds.*.serve),
which check the limits that depend on the settings or on the model, with the same 422 shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from genlab.errors import UsageError
from genlab import registry
from genlab.models.controls import Control, union

SEED_MAX = 2**63 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


def printable(text: str) -> str:
    """`text` with any lone surrogate (from a JSON escape like \\ud800, or undecodable bytes read
    with surrogateescape) written as a backslash escape, so it can always be encoded as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _utf8(text: str) -> str:
    if printable(text) != text:
        raise ValueError("holds a lone UTF-16 surrogate (an escape like \\ud800 that is no character); "
                         "expected text that is valid Unicode")
    return text


Text = Annotated[str, AfterValidator(_utf8)]  # every string field: a lone surrogate is a 422, not a 500


@dataclass
class Settings:
    max_n: int = 64              # images per request (frames per latent walk)
    max_steps: int = 1000        # diffusion steps per request
    max_new_tokens: int = 512    # generated tokens per request
    max_body: int = 65536        # request body bytes
    timeout: float = 60.0        # seconds per request
    max_batch: int = 64          # rows merged into one forward pass (1 = no batching)
    max_wait_ms: float = 5.0     # how long the first request of a batch waits for company
    token: str | None = None     # bearer token; None = no auth
    read_timeout: float = 15.0   # seconds for a request's head and body to arrive (slow clients are cut off)
    host: str = "127.0.0.1"      # the bound address: requests must name it (or an allow_hosts name) in Host
    allow_hosts: tuple[str, ...] = ()  # more Host names to answer to; "*" = any
    OWN_FLAGS: ClassVar[tuple[str, ...]] = ("token", "host", "allow_hosts")  # CLI flags not made from a default

    def __post_init__(self):
        for name in ("max_n", "max_steps", "max_new_tokens", "max_body", "max_batch"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}; expected at least 1")
        if self.timeout <= 0 or self.max_wait_ms < 0 or self.read_timeout <= 0:
            raise UsageError("--timeout and --read-timeout must be > 0 and --max-wait-ms >= 0")


def control_fields(kind: str) -> dict[str, Any]:
    """The sampling controls the generators of `kind` declare, as optional request fields with their fixed ranges
    (for pydantic.create_model): one request body serves every family of the kind."""
    controls = union({f: registry.get(f).model_cls.CONTROLS for f in registry.families_of(kind, generative=True)})
    return {name: (Optional[Text if c.type is str else c.type], declared(c, optional=True))
            for name, (c, _) in controls.items()}


def declared(c: Control, *, optional: bool = False, default: Any = None) -> Any:
    """A request field with the fixed range of a family's declared control `c`, defaulting to None
    ("not given") when `optional`, else to `default` or the declared default. Bounds that depend on
    the model (steps up to T) or on the settings (max_steps) are checked by the kind's route."""
    if not optional and default is None:
        default = c.default
    return Field(default, ge=c.min, le=c.max)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid",     # an unknown field is a 422 naming it
                              allow_inf_nan=False)  # NaN and +-Infinity (Python's json reads them) too
