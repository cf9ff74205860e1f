"""The video kind's route: POST /v1/models/{name}/video -> n clips side by side as one base64 animated GIF (or MP4
with "format": "mp4") and their filmstrip PNG in JSON, or the file itself with `Accept: image/gif` or
`Accept: video/mp4`. Every job draws from torch.Generator().manual_seed(seed), as `genlab sample` would."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal, Optional

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, create_model

from genlab.imageio import png_bytes
from genlab.kinds.base import Route
from genlab.provenance import for_request
from genlab.serve.schemas import SEED_MAX, Body, control_fields
from genlab.serve.served import Served, check_label, invalid, sampling_controls, seeded
from genlab.videoio import filmstrip, video_bytes

MEDIA = {"gif": "image/gif", "mp4": "video/mp4"}


class _VideoBase(Body):
    n: int = Field(1, ge=1, description="clips to make (shown side by side)")
    label: Optional[int] = Field(None, ge=0, description="class index (conditional models)")
    seed: int = Field(0, ge=0, le=SEED_MAX)
    format: Literal["gif", "mp4"] = Field("gif", description="gif (plays everywhere) or mp4 (H.264)")


VideoRequest = create_model("VideoRequest", __base__=_VideoBase, **control_fields("video"))
CONTROL_FIELDS = tuple(control_fields("video"))


@dataclass
class VideoJob:
    n: int
    label: int | None
    seed: int
    format: str
    controls: dict


def run_video(s: Served, jobs: list) -> list[dict]:
    m, out = s.model, []
    fps = m.config.fps
    for p in (j.payload for j in jobs):
        clips = m.sample(p.n, cond=p.label, generator=seeded(p.seed), **p.controls).cpu()
        settings = {"label": p.label, **p.controls}
        meta = for_request(s.provenance, seed=p.seed, settings=settings)
        out.append({"video": video_bytes(clips, p.format, fps, meta), "filmstrip": png_bytes(filmstrip(clips), meta),
                    "provenance": meta, "settings": settings, "fps": fps})
    return out


async def video(state, served: Served, req, request: Request):
    if req.n > state.settings.max_n:
        raise invalid("n", f"n={req.n} is over this server's limit of {state.settings.max_n} clips per request")
    check_label(served, req.label)
    controls = sampling_controls(served, req, CONTROL_FIELDS)
    out = await state.run(served.name, "video", (req.format,), req.n,
                          VideoJob(req.n, req.label, req.seed, req.format, controls))
    accept = request.headers.get("accept", "")
    if MEDIA[req.format] in accept:
        return Response(out["video"], media_type=MEDIA[req.format],
                        headers={"X-Genlab-Seed": out["provenance"]["genlab:seed"], "X-AI-Generated": "true"})
    c = served.model.config
    return JSONResponse({"model": served.name, "n": req.n, "seed": req.seed, "label": req.label,
                         "settings": out["settings"], "format": req.format, "media_type": MEDIA[req.format],
                         "fps": out["fps"], "frames": c.frames, "size": c.image_size,
                         "video": base64.b64encode(out["video"]).decode("ascii"),
                         "filmstrip": base64.b64encode(out["filmstrip"]).decode("ascii"),
                         "provenance": out["provenance"]})


ROUTES = (Route("video", VideoRequest, video, run_video, applies=lambda m: m.generative,
                summary="n clips side by side (a base64 GIF or MP4 and a filmstrip PNG in JSON, or the file with "
                        "Accept: image/gif or video/mp4)"),)
