"""The server's settings and request bodies (pydantic: a wrong type or a value out of its fixed range
is a 422 naming the field). Limits that depend on the settings or on the model are checked in
genlab.serve.workers, with the same 422 shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SEED_MAX = 2**63 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


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

    def __post_init__(self):
        for name in ("max_n", "max_steps", "max_new_tokens", "max_body", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}; expected at least 1")
        if self.timeout <= 0 or self.max_wait_ms < 0:
            raise ValueError("--timeout must be > 0 and --max-wait-ms >= 0")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 422 naming it


class ImagesRequest(Body):
    n: int = Field(1, ge=1, description="images to make")
    label: int | None = Field(None, ge=0, description="class index (conditional models)")
    seed: int = Field(0, ge=0, le=SEED_MAX)
    steps: int | None = Field(None, ge=1)
    sampler: str | None = None
    eta: float | None = Field(None, ge=0, le=1)
    guidance: float | None = Field(None, ge=0, le=20)
    truncation: float | None = Field(None, gt=0, le=10)


IMAGE_CONTROLS = ("steps", "sampler", "eta", "guidance", "truncation")


class InterpolateRequest(Body):
    seeds: tuple[Seed, Seed] = Field((0, 1), description="the walk's two ends")
    frames: int = Field(9, ge=2)
    label: int | None = Field(None, ge=0)


class TextRequest(Body):
    prompt: str = Field("", max_length=4096)
    max_new_tokens: int = Field(100, ge=0)
    temperature: float = Field(1.0, ge=0, le=10)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    stop: list[str] = Field(default_factory=list, max_length=8)
    stream: bool = False


class TranslateRequest(Body):
    text: str = Field(..., min_length=1, max_length=4096)
    beam: int = Field(1, ge=1, le=16)
    length_penalty: float = Field(1.0, ge=0, le=5)
    max_new_tokens: int | None = Field(None, ge=1)


class ClassifyRequest(Body):
    text: str = Field(..., min_length=1, max_length=16384)
