"""The image-pairs kind's route: POST /v1/models/{name}/image2image with an uploaded PNG/JPEG (base64, or a data:
URL as a browser canvas gives it) -> its translation(s) as base64 PNG in JSON, or the PNG itself with
`Accept: image/png`. n > 1 draws n translations of the one input (the dropout noise), side by side. Every job
draws from torch.Generator().manual_seed(seed), as `genlab sample --input` would."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np
import torch
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, create_model

from genlab.data.image_pairs import as_inputs
from genlab.data.images import to_float_images
from genlab.data.readers import decode_bytes
from genlab.errors import DataError
from genlab.imageio import grid_image, png_bytes, to_uint8
from genlab.kinds.base import Route
from genlab.provenance import for_request
from genlab.serve.schemas import SEED_MAX, Body, control_fields
from genlab.serve.served import Served, invalid, sampling_controls, seeded

MAX_PIXELS = 1024 * 1024   # an upload's header may claim at most this many pixels


class _Image2ImageBase(Body):
    image: str = Field(..., description="the input image: base64 PNG/JPEG, or a data: URL")
    n: int = Field(1, ge=1, description="translations of it to draw (the dropout noise), side by side")
    seed: int = Field(0, ge=0, le=SEED_MAX)


Image2ImageRequest = create_model("Image2ImageRequest", __base__=_Image2ImageBase, **control_fields("image-pairs"))
CONTROL_FIELDS = tuple(control_fields("image-pairs"))


@dataclass
class Image2ImageJob:
    a: torch.Tensor     # (1, Ca, H, W): the input as the model sees it
    n: int
    seed: int
    controls: dict


def decode_upload(text: str, channels: int, size: int) -> torch.Tensor:
    """The request's image field -> (1, channels, size, size) in [-1, 1]; a DataError says what was wrong."""
    data = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("image: not base64; expected a base64 PNG or JPEG (or a data: URL)") from None
    array = decode_bytes(raw, "image", MAX_PIXELS)
    images = to_float_images(array.transpose(2, 0, 1)[None], "image")
    return as_inputs(images, channels, size, "image")


def run_image2image(s: Served, jobs: list) -> list[dict]:
    m, out = s.model, []
    for p in (j.payload for j in jobs):
        b = m.sample(p.n, cond=p.a, generator=seeded(p.seed), **p.controls).cpu()
        settings = {"n": p.n, **p.controls}
        meta = for_request(s.provenance, seed=p.seed, settings=settings, kind="image translation")
        row = grid_image(b, nrow=p.n)
        shown = np.asarray(to_uint8(p.a))[0]
        out.append({"png": png_bytes(row, meta), "input": png_bytes(shown, None), "provenance": meta,
                    "settings": settings})
    return out


async def image2image(state, served: Served, req, request: Request):
    if req.n > state.settings.max_n:
        raise invalid("n", f"n={req.n} is over this server's limit of {state.settings.max_n} per request")
    c = served.model.config
    try:
        a = decode_upload(req.image, c.in_channels, c.image_size)
    except DataError as e:
        raise invalid("image", str(e)) from None
    controls = sampling_controls(served, req, CONTROL_FIELDS)
    out = await state.run(served.name, "image2image", (), req.n, Image2ImageJob(a, req.n, req.seed, controls))
    if "image/png" in request.headers.get("accept", ""):
        return Response(out["png"], media_type="image/png",
                        headers={"X-Genlab-Seed": out["provenance"]["genlab:seed"], "X-AI-Generated": "true"})
    return JSONResponse({"model": served.name, "n": req.n, "seed": req.seed, "settings": out["settings"],
                         "size": c.image_size, "png": base64.b64encode(out["png"]).decode("ascii"),
                         "input": base64.b64encode(out["input"]).decode("ascii"), "provenance": out["provenance"]})


ROUTES = (Route("image2image", Image2ImageRequest, image2image, run_image2image,
                summary="the translation of an uploaded image (base64 PNG/JPEG or a data: URL) as a base64 PNG in "
                        "JSON, or the PNG with Accept: image/png; n draws side by side"),)
