"""The server's settings and request bodies (pydantic: a wrong type or a value out of its fixed range
is a 422 naming the field). Limits that depend on the settings or on the model are checked in
genlab.serve.workers, with the same 422 shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from genlab.errors import UsageError

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


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid",     # an unknown field is a 422 naming it
                              allow_inf_nan=False)  # NaN and +-Infinity (Python's json reads them) too


class ImagesRequest(Body):
    n: int = Field(1, ge=1, description="images to make")
    label: int | None = Field(None, ge=0, description="class index (conditional models)")
    seed: int = Field(0, ge=0, le=SEED_MAX)
    steps: int | None = Field(None, ge=1)
    sampler: Text | None = None
    eta: float | None = Field(None, ge=0, le=1)
    guidance: float | None = Field(None, ge=0, le=20)
    truncation: float | None = Field(None, gt=0, le=10)


IMAGE_CONTROLS = ("steps", "sampler", "eta", "guidance", "truncation")


class InterpolateRequest(Body):
    seeds: tuple[Seed, Seed] = Field((0, 1), description="the walk's two ends")
    frames: int = Field(9, ge=2)
    label: int | None = Field(None, ge=0)


class TextRequest(Body):
    prompt: Text = Field("", max_length=4096)
    max_new_tokens: int = Field(100, ge=0)
    temperature: float = Field(1.0, ge=0, le=10)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    stop: list[Text] = Field(default_factory=list, max_length=8)
    stream: bool = False


class TranslateRequest(Body):
    text: Text = Field(..., min_length=1, max_length=4096)
    beam: int = Field(1, ge=1, le=16)
    length_penalty: float = Field(1.0, ge=0, le=5)
    max_new_tokens: int | None = Field(None, ge=1)


class ClassifyRequest(Body):
    text: Text = Field(..., min_length=1, max_length=16384)
