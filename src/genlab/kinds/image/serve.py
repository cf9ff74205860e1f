"""The image kind's routes: /images (samples) and /interpolate (latent walks), batched.

Batching never changes a request's samples: every job draws its own randomness from
torch.Generator().manual_seed(seed), exactly as `genlab.sample` with that seed would, and only the
deterministic network passes are shared (latent models: `draw` per job, then one `decode`; the others one
sampling loop fed by `NoiseParts`, for the jobs whose resolved controls are equal).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Optional

import torch
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, create_model

from genlab.imageio import grid_image, png_bytes, to_uint8
from genlab.kinds.base import Route
from genlab.models.base import NoiseParts, slerp
from genlab.provenance import for_request
from genlab.serve.schemas import SEED_MAX, Body, Seed, control_fields
from genlab.serve.served import Served, check_label, invalid, sampling_controls, seeded, stop_if_abandoned


class _ImagesBase(Body):
    n: int = Field(1, ge=1, description="images to make")
    label: Optional[int] = Field(None, ge=0, description="class index (conditional models)")
    seed: int = Field(0, ge=0, le=SEED_MAX)


ImagesRequest = create_model("ImagesRequest", __base__=_ImagesBase, **control_fields("image"))
IMAGE_CONTROLS = tuple(control_fields("image"))  # the ImagesRequest fields that are sampling controls


class InterpolateRequest(Body):
    seeds: tuple[Seed, Seed] = Field((0, 1), description="the walk's two ends")
    frames: int = Field(9, ge=2)
    label: Optional[int] = Field(None, ge=0)


@dataclass
class ImageJob:
    n: int
    label: int | None
    seed: int
    controls: dict
    grid: bool          # one PNG grid instead of a PNG per image


@dataclass
class WalkJob:
    seeds: tuple[int, int]
    frames: int
    label: int | None
    grid: bool = False

    @property
    def controls(self) -> dict:
        return {"frames": self.frames}


# ---- batched computations (on the model's worker thread) -----------------------------------------


def _pngs(s: Served, images: torch.Tensor, job, kind: str, seed) -> dict:
    settings = {"label": job.label, **job.controls}
    meta = for_request(s.provenance, seed=seed, settings=settings, kind=kind)
    if job.grid:
        return {"png": png_bytes(grid_image(images), meta), "provenance": meta, "settings": settings}
    return {"pngs": [png_bytes(a, meta) for a in to_uint8(images)], "provenance": meta, "settings": settings}


def run_images(s: Served, jobs: list) -> list[dict]:
    m, ps = s.model, [j.payload for j in jobs]
    if "latent" in m.CAPABILITIES:  # each job's latents (and labels) from its own seed, then one decoder pass
        drawn = [m.draw(p.n, cond=p.label, generator=seeded(p.seed), **p.controls) for p in ps]
        z = torch.cat([d[0] for d in drawn])
        y = None if drawn[0][1] is None else torch.cat([d[1] for d in drawn])
        x = m.decode(z, y)
    else:  # one sampling loop; each job's noise (start and per step) from its own seed
        labels = None if ps[0].label is None else torch.tensor([p.label for p in ps for _ in range(p.n)])
        x = m.sample(sum(p.n for p in ps), cond=labels, generator=NoiseParts([(p.n, seeded(p.seed)) for p in ps]),
                     on_step=lambda i: stop_if_abandoned(jobs), **ps[0].controls)
    parts = x.cpu().split([p.n for p in ps])
    return [_pngs(s, part, p, "samples", p.seed) for part, p in zip(parts, ps)]


def run_interpolate(s: Served, jobs: list) -> list[dict]:
    """Spherical walks from seed a's latent to seed b's, the label held along the walk (0 when a
    conditional GAN gets none, as `genlab interpolate`). All jobs' frames decode in one pass."""
    m, zs, ys = s.model, [], []
    for job in jobs:
        p = job.payload
        label = p.label if p.label is not None or not s.num_classes else 0  # as `genlab interpolate`
        za, ya = m.draw(1, cond=label, generator=seeded(p.seeds[0]))
        zb, _ = m.draw(1, cond=label, generator=seeded(p.seeds[1]))
        zs.append(torch.cat([slerp(za, zb, t) for t in torch.linspace(0, 1, p.frames).tolist()]))
        ys.append(None if ya is None else ya.expand(p.frames))
    x = m.decode(torch.cat(zs), None if ys[0] is None else torch.cat(ys)).cpu()
    parts = x.split([j.payload.frames for j in jobs])
    return [_pngs(s, part, j.payload, "interpolation", list(j.payload.seeds)) for part, j in zip(parts, jobs)]


# ---- the handlers (in the event loop) ------------------------------------------------------------


def _wants_png(request: Request) -> bool:
    """`Accept: image/png`: one PNG grid instead of JSON."""
    return "image/png" in request.headers.get("accept", "")


def _response(request: Request, served: Served, out: dict, extra: dict) -> Response:
    if _wants_png(request):
        return Response(out["png"], media_type="image/png",
                        headers={"X-Genlab-Seed": out["provenance"]["genlab:seed"], "X-AI-Generated": "true"})
    size = served.model.config.image_size
    return JSONResponse({"model": served.name, **extra, "settings": out["settings"], "width": size, "height": size,
                         "images": [base64.b64encode(p).decode("ascii") for p in out["pngs"]],
                         "provenance": out["provenance"]})


async def images(state, served: Served, req, request: Request):
    if req.n > state.settings.max_n:
        raise invalid("n", f"n={req.n} is over this server's limit of {state.settings.max_n} images per request")
    check_label(served, req.label)
    controls = sampling_controls(served, req, IMAGE_CONTROLS)
    grid = _wants_png(request)
    # latent models draw per job, so any jobs batch; a sampling loop is shared only by equal controls
    key = () if "latent" in served.model.CAPABILITIES else (req.label is None, tuple(sorted(controls.items())))
    out = await state.run(served.name, "images", key, req.n, ImageJob(req.n, req.label, req.seed, controls, grid))
    return _response(request, served, out, {"n": req.n, "seed": req.seed, "label": req.label})


async def interpolate(state, served: Served, req, request: Request):
    if req.frames > state.settings.max_n:
        raise invalid("frames", f"frames={req.frames} is over this server's limit of {state.settings.max_n}")
    check_label(served, req.label)
    job = WalkJob(req.seeds, req.frames, req.label, _wants_png(request))
    out = await state.run(served.name, "interpolate", (), req.frames, job)
    return _response(request, served, out, {"seeds": list(req.seeds), "frames": req.frames, "label": req.label})


ROUTES = (
    Route("images", ImagesRequest, images, run_images, applies=lambda m: m.generative,
          summary="n images (base64 PNGs, or one PNG grid with Accept: image/png)"),
    Route("interpolate", InterpolateRequest, interpolate, run_interpolate,
          applies=lambda m: "latent" in m.CAPABILITIES,
          summary="a spherical walk between two seeds' latents"),
)
