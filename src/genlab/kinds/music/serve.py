"""The music kind's route: POST /v1/models/{name}/music -> n pieces continuing a prompt (a music text; empty: new
pieces), each as its text, a MIDI file and a WAV rendering (base64), with a piano roll PNG of them all; or the
pieces one after another as one file with `Accept: audio/midi` or `Accept: audio/wav`. Every job draws from
torch.Generator().manual_seed(seed), as `genlab sample` would."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from genlab.audioio import wav_bytes
from genlab.imageio import png_bytes
from genlab.kinds.base import Route
from genlab.kinds.music.compose import MUSIC_TOKENS, compose, one_after_another
from genlab.kinds.music.prepare import RENDER_RATE
from genlab.kinds.music.roll import piano_roll
from genlab.models.controls import by_name
from genlab.models.gpt import LanguageModel
from genlab.musicio import midi_bytes, parse, render_wav
from genlab.provenance import for_request
from genlab.serve.schemas import SEED_MAX, Body, Text, declared
from genlab.serve.served import Served, check_range, invalid, seeded

LM_CONTROLS = by_name(LanguageModel.CONTROLS)
MEDIA = {"audio/midi": "midi", "audio/wav": "wav"}


class MusicRequest(Body):
    n: int = Field(1, ge=1, description="pieces to make")
    prompt: Text = Field("", max_length=8192, description="the opening bars, as a music text (empty: new pieces)")
    max_new_tokens: int = declared(LM_CONTROLS["max_new_tokens"], default=MUSIC_TOKENS)
    temperature: float = declared(LM_CONTROLS["temperature"])
    top_k: int = declared(LM_CONTROLS["top_k"])
    top_p: float = declared(LM_CONTROLS["top_p"])
    seed: int = Field(0, ge=0, le=SEED_MAX)
    tempo_bpm: float = Field(90, ge=30, le=300, description="tempo of the MIDI file and the rendering")


@dataclass
class MusicJob:
    req: MusicRequest
    knobs: dict


def run_music(s: Served, jobs: list) -> list[dict]:
    out = []
    for p in (j.payload for j in jobs):
        r = p.req
        texts = compose(s.model, s.model.run.tokenizer, r.n, prompt=r.prompt, generator=seeded(r.seed),
                        max_new_tokens=r.max_new_tokens, **p.knobs)
        settings = {"prompt": r.prompt, "max_new_tokens": r.max_new_tokens, **p.knobs, "tempo_bpm": r.tempo_bpm}
        meta = for_request(s.provenance, seed=r.seed, settings=settings)
        joined = one_after_another(texts)
        pieces = [{"text": t, "midi": midi_bytes(parse(t)[0], meta, r.tempo_bpm),
                   "wav": wav_bytes(render_wav(t, RENDER_RATE, r.tempo_bpm), RENDER_RATE, meta)} for t in texts]
        out.append({"pieces": pieces, "midi": midi_bytes(parse(joined)[0], meta, r.tempo_bpm),
                    "wav": wav_bytes(render_wav(joined, RENDER_RATE, r.tempo_bpm), RENDER_RATE, meta),
                    "piano_roll": png_bytes(piano_roll(texts), meta), "provenance": meta, "settings": settings})
    return out


async def music(state, served: Served, req: MusicRequest, request: Request):
    if req.n > state.settings.max_n:
        raise invalid("n", f"n={req.n} is over this server's limit of {state.settings.max_n} pieces per request")
    if req.max_new_tokens > state.settings.max_new_tokens:
        raise invalid("max_new_tokens", f"max_new_tokens={req.max_new_tokens} is over this server's limit "
                                        f"of {state.settings.max_new_tokens}")
    knobs = {"temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p}
    check_range(served, knobs)
    _, skipped = parse(req.prompt)
    if skipped:
        raise invalid("prompt", f"{skipped} word(s) of the prompt are not music tokens; expected a music text "
                                "(bar, t<k>, v<i>, p<m>, d<k>: see genlab.musicio)")
    try:
        served.model.run.tokenizer.encode(req.prompt, strict=True)
    except ValueError as e:
        raise invalid("prompt", str(e)) from None
    out = await state.run(served.name, "music", (), req.n, MusicJob(req, knobs))
    accept = request.headers.get("accept", "")
    for media, key in MEDIA.items():
        if media in accept:
            return Response(out[key], media_type=media,
                            headers={"X-Genlab-Seed": out["provenance"]["genlab:seed"], "X-AI-Generated": "true"})
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
    return JSONResponse({"model": served.name, "n": req.n, "seed": req.seed, "settings": out["settings"],
                         "sample_rate": RENDER_RATE,
                         "pieces": [{"text": p["text"], "midi": b64(p["midi"]), "wav": b64(p["wav"])}
                                    for p in out["pieces"]],
                         "piano_roll": b64(out["piano_roll"]), "provenance": out["provenance"]})


ROUTES = (Route("music", MusicRequest, music, run_music, applies=lambda m: "stream" in m.CAPABILITIES,
                summary="n pieces continuing a prompt: texts, MIDI and WAV (base64) and a piano roll, or one MIDI "
                        "or WAV file with Accept: audio/midi or audio/wav"),)
