"""The audio kind's route: POST /v1/models/{name}/audio -> n clips as base64 WAVs with their spectrogram (PNG), or
one WAV of them all with `Accept: audio/wav`. Every job draws from torch.Generator().manual_seed(seed), as
`genlab sample` would; latent models share one decoder pass across the batch's jobs."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Optional

import torch
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, create_model

from genlab.audioio import wav_bytes
from genlab.imageio import grid_image, png_bytes
from genlab.kinds.audio.prepare import GAP_SECONDS, spectrograms
from genlab.kinds.base import Route
from genlab.provenance import for_request
from genlab.serve.schemas import SEED_MAX, Body, control_fields
from genlab.serve.served import Served, check_label, invalid, sampling_controls, seeded


class _AudioBase(Body):
    n: int = Field(1, ge=1, description="clips to make")
    label: Optional[int] = Field(None, ge=0, description="class index (conditional models)")
    seed: int = Field(0, ge=0, le=SEED_MAX)


AudioRequest = create_model("AudioRequest", __base__=_AudioBase, **control_fields("audio"))
CONTROL_FIELDS = tuple(control_fields("audio"))


@dataclass
class AudioJob:
    n: int
    label: int | None
    seed: int
    controls: dict


def run_audio(s: Served, jobs: list) -> list[dict]:
    m, ps = s.model, [j.payload for j in jobs]
    if "latent" in m.CAPABILITIES:   # each job's latents from its own seed, then one decoder pass
        drawn = [m.draw(p.n, cond=p.label, generator=seeded(p.seed), **p.controls) for p in ps]
        y = None if drawn[0][1] is None else torch.cat([d[1] for d in drawn])
        parts = m.decode(torch.cat([d[0] for d in drawn]), y).cpu().split([p.n for p in ps])
    else:
        parts = [m.sample(p.n, cond=p.label, generator=seeded(p.seed), **p.controls).cpu() for p in ps]
    sr = m.config.sample_rate
    out = []
    for clips, p in zip(parts, ps):
        settings = {"label": p.label, **p.controls}
        meta = for_request(s.provenance, seed=p.seed, settings=settings)
        gap = torch.zeros(int(GAP_SECONDS * sr))
        joined = torch.cat([q for c in clips for q in (c[0], gap)][:-1])
        out.append({"wavs": [wav_bytes(c[0], sr, meta) for c in clips], "wav": wav_bytes(joined, sr, meta),
                    "spectrogram": png_bytes(grid_image(spectrograms(clips, sr)), meta), "provenance": meta,
                    "settings": settings})
    return out


async def audio(state, served: Served, req, request: Request):
    if req.n > state.settings.max_n:
        raise invalid("n", f"n={req.n} is over this server's limit of {state.settings.max_n} clips per request")
    check_label(served, req.label)
    controls = sampling_controls(served, req, CONTROL_FIELDS)
    key = () if "latent" in served.model.CAPABILITIES else (req.label is None, tuple(sorted(controls.items())))
    out = await state.run(served.name, "audio", key, req.n, AudioJob(req.n, req.label, req.seed, controls))
    if "audio/wav" in request.headers.get("accept", ""):
        return Response(out["wav"], media_type="audio/wav",
                        headers={"X-Genlab-Seed": out["provenance"]["genlab:seed"], "X-AI-Generated": "true"})
    c = served.model.config
    return JSONResponse({"model": served.name, "n": req.n, "seed": req.seed, "label": req.label,
                         "settings": out["settings"], "sample_rate": c.sample_rate,
                         "seconds": c.length / c.sample_rate,
                         "clips": [base64.b64encode(w).decode("ascii") for w in out["wavs"]],
                         "spectrogram": base64.b64encode(out["spectrogram"]).decode("ascii"),
                         "provenance": out["provenance"]})


ROUTES = (Route("audio", AudioRequest, audio, run_audio, applies=lambda m: m.generative,
                summary="n clips (base64 WAVs and their spectrogram PNG, or one WAV with Accept: audio/wav)"),)
