"""The server's settings and request bodies (pydantic: a wrong type or a value out of its fixed range
is a 422 naming the field). Limits that depend on the settings or on the model are checked in
genlab.serve.workers, with the same 422 shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from genlab.errors import UsageError
from genlab.models.controls import Control, by_name
from genlab.models.diffusion import DDPM
from genlab.models.gan import GAN
from genlab.models.gpt import LanguageModel
from genlab.models.seq2seq import Seq2Seq

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


def declared(c: Control, *, optional: bool = False, default: Any = None) -> Any:
    """A request field with the fixed range of a family's declared control `c`, defaulting to None
    ("not given") when `optional`, else to `default` or the declared default. Bounds that depend on
    the model (steps up to T) or on the settings (max_steps) are checked in genlab.serve.workers."""
    if not optional and default is None:
        default = c.default
    return Field(default, ge=c.min, le=c.max)


DDPM_CONTROLS, GAN_CONTROLS = by_name(DDPM.CONTROLS), by_name(GAN.CONTROLS)
LM_CONTROLS, PAIRS_CONTROLS = by_name(LanguageModel.CONTROLS), by_name(Seq2Seq.CONTROLS)
IMAGE_CONTROLS = (*DDPM_CONTROLS, *GAN_CONTROLS)  # the ImagesRequest fields that are sampling controls
TEXT_MAX_NEW_TOKENS = 100  # the text route's default: shorter than the library's, a request is an interactive call


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid",     # an unknown field is a 422 naming it
                              allow_inf_nan=False)  # NaN and +-Infinity (Python's json reads them) too


class ImagesRequest(Body):
    n: int = Field(1, ge=1, description="images to make")
    label: int | None = Field(None, ge=0, description="class index (conditional models)")
    seed: int = Field(0, ge=0, le=SEED_MAX)
    steps: int | None = declared(DDPM_CONTROLS["steps"], optional=True)
    sampler: Text | None = None
    eta: float | None = declared(DDPM_CONTROLS["eta"], optional=True)
    guidance: float | None = declared(DDPM_CONTROLS["guidance"], optional=True)
    truncation: float | None = declared(GAN_CONTROLS["truncation"], optional=True)


class InterpolateRequest(Body):
    seeds: tuple[Seed, Seed] = Field((0, 1), description="the walk's two ends")
    frames: int = Field(9, ge=2)
    label: int | None = Field(None, ge=0)


class TextRequest(Body):
    prompt: Text = Field("", max_length=4096)
    max_new_tokens: int = declared(LM_CONTROLS["max_new_tokens"], default=TEXT_MAX_NEW_TOKENS)
    temperature: float = declared(LM_CONTROLS["temperature"])
    top_k: int = declared(LM_CONTROLS["top_k"])
    top_p: float = declared(LM_CONTROLS["top_p"])
    seed: int = Field(0, ge=0, le=SEED_MAX)
    stop: list[Text] = Field(default_factory=list, max_length=8)
    stream: bool = False


class TranslateRequest(Body):
    text: Text = Field(..., min_length=1, max_length=4096)
    beam: int = declared(PAIRS_CONTROLS["beam"])
    length_penalty: float = declared(PAIRS_CONTROLS["length_penalty"])
    max_new_tokens: int | None = declared(PAIRS_CONTROLS["max_new_tokens"], optional=True)


class ClassifyRequest(Body):
    text: Text = Field(..., min_length=1, max_length=16384)
