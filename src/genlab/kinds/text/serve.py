"""The text kinds' routes: /text (language models, streamed as server-sent events on request), /translate
(seq2seq) and /classify (text classifiers), batched.

Batching never changes a request's output: every text job draws from its own
torch.Generator().manual_seed(seed), exactly as `genlab generate` with n=1 would; only the network passes are
shared (`LanguageModel.stream_rows`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Callable

from fastapi.responses import StreamingResponse
from pydantic import Field

from genlab.data.tokenizers import EOS
from genlab.kinds.base import Route
from genlab.kinds.text.textgen import classify, cut_at_stop, encode_prompt, translate
from genlab.models.controls import by_name
from genlab.models.gpt import LanguageModel
from genlab.models.seq2seq import Seq2Seq
from genlab.provenance import for_request
from genlab.serve.schemas import SEED_MAX, Body, Text, declared
from genlab.serve.served import Served, check_range, invalid, seeded

log = logging.getLogger("genlab.serve")
LM_CONTROLS, PAIRS_CONTROLS = by_name(LanguageModel.CONTROLS), by_name(Seq2Seq.CONTROLS)
TEXT_MAX_NEW_TOKENS = 100  # the text route's default: shorter than the library's, a request is an interactive call


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


@dataclass
class TextJob:
    prompt: str
    ids: list[int]
    knobs: dict                      # temperature, top_k, top_p
    max_new: int
    seed: int
    stop: list[str]
    sink: Callable[[str], None] | None = None   # called with each new piece of text (streaming)


# ---- batched computations (on the model's worker thread) -----------------------------------------


class _Completion:
    """One row's text as its tokens arrive: stop strings, finish reason, and the pieces to stream.
    While a stop string could still be forming, its possible start is held back."""

    def __init__(self, tokenizer, job):
        self.tok, self.job, self.queued = tokenizer, job.payload, job
        self.ids: list[int] = []
        self.count, self.sent, self.text, self.reason = 0, 0, "", None
        self.hold = max((len(x) for x in self.job.stop), default=1) - 1

    def ended(self) -> bool:
        """Complete, or nobody waits for it any more (the client left or timed out)."""
        if self.reason is None and self.queued.cancelled:
            self.reason = "cancelled"
        return self.reason is not None

    def add(self, token: int) -> None:
        self.count += 1
        if token != EOS:
            self.ids.append(token)
        full = self.tok.decode(self.ids)
        self.text = cut_at_stop(full, self.job.stop)
        if len(self.text) < len(full):
            self.reason = "stop"
        elif token == EOS:
            self.reason = "eos"
        elif self.count >= self.job.max_new:
            self.reason = "length"
        ready = self.text if self.reason else self.text[:len(self.text) - self.hold].rstrip("\ufffd")
        if self.job.sink is not None and len(ready) > self.sent:
            self.job.sink(ready[self.sent:])
            self.sent = len(ready)

    def result(self) -> dict:
        return {"completion": self.text, "tokens": self.count, "finish_reason": self.reason or "length"}


def run_text(s: Served, jobs: list) -> list[dict]:
    ps = [j.payload for j in jobs]
    rows = [_Completion(s.model.run.tokenizer, j) for j in jobs]
    steps = s.model.stream_rows([p.ids for p in ps], [seeded(p.seed) for p in ps], [p.knobs for p in ps],
                                [p.max_new for p in ps], ended=lambda i: rows[i].ended())
    for new in steps:
        for row, token in zip(rows, new):
            if token is not None and row.reason is None:
                row.add(token)
    return [r.result() for r in rows]


def run_translate(s: Served, jobs: list) -> list[dict]:
    out = translate(s.model, [j.payload.text for j in jobs], beam=jobs[0].payload.beam,
                    length_penalty=jobs[0].payload.length_penalty, max_new_tokens=jobs[0].payload.max_new_tokens)
    return [{"translation": t} for t in out]


def run_classify(s: Served, jobs: list) -> list[dict]:
    return [{"label": c.label, "probs": c.probs, "tokens": c.tokens, "weights": c.weights}
            for c in classify(s.model, [j.payload.text for j in jobs])]


# ---- the handlers (in the event loop) ------------------------------------------------------------


async def text(state, served: Served, req: TextRequest, request):
    if req.max_new_tokens > state.settings.max_new_tokens:
        raise invalid("max_new_tokens", f"max_new_tokens={req.max_new_tokens} is over this server's limit "
                                        f"of {state.settings.max_new_tokens}")
    check_range(served, {"top_k": req.top_k, "top_p": req.top_p, "temperature": req.temperature})
    try:
        ids = encode_prompt(served.model, req.prompt)
    except ValueError as e:
        raise invalid("prompt", str(e)) from None
    knobs = {"temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p}
    settings_doc = {**knobs, "max_new_tokens": req.max_new_tokens, "stop": req.stop}
    meta = for_request(served.provenance, seed=req.seed, settings=settings_doc)
    head = {"model": served.name, "prompt": req.prompt, "seed": req.seed, "settings": settings_doc}

    def done(result: dict) -> dict:
        return {**head, **result, "text": req.prompt + result["completion"], "provenance": meta}

    job = TextJob(req.prompt, ids, knobs, req.max_new_tokens, req.seed, req.stop)
    if not req.stream:
        return done(await state.run(served.name, "text", (), 1, job))
    return StreamingResponse(_events(state, served.name, job, done), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(data: dict, event: str | None = None) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"


async def _events(state, name: str, job: TextJob, done):
    """Server-sent events for one streamed generation: a `data: {"text": piece}` per token as the
    batch produces it, then `event: done` with the whole response (or `event: error`)."""
    loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
    job.sink = lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)
    queued = state.batchers[name].submit("text", (), 1, job)
    deadline, getter = loop.time() + state.settings.timeout, None
    try:
        while True:
            getter = asyncio.ensure_future(pieces.get())
            await asyncio.wait({getter, queued.future}, timeout=max(0.0, deadline - loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield _sse({"text": getter.result()})
                continue
            getter.cancel()
            if queued.future.done() and pieces.empty():
                if queued.future.exception() is not None:
                    e = queued.future.exception()
                    log.error("%s text stream failed: %s: %s", name, type(e).__name__, e)
                    yield _sse({"detail": f"internal error: {type(e).__name__}: {e}"}, "error")
                else:
                    yield _sse(done(queued.future.result()), "done")
                return
            if loop.time() >= deadline:
                yield _sse({"detail": state.timeout_message}, "error")
                return
    finally:
        if getter is not None:
            getter.cancel()
        if not queued.future.done():
            queued.future.cancel()  # the client left or timed out: its row stops at the next token


async def translate_route(state, served: Served, req: TranslateRequest, request):
    check_range(served, {"beam": req.beam, "length_penalty": req.length_penalty,
                         "max_new_tokens": req.max_new_tokens})
    try:
        served.model.run.tokenizer.encode(req.text, strict=True)
    except ValueError as e:
        raise invalid("text", str(e)) from None
    key = (req.beam, req.length_penalty, req.max_new_tokens)
    out = await state.run(served.name, "translate", key, req.beam, req)
    return {"model": served.name, "text": req.text, **out,
            "settings": {"beam": req.beam, "length_penalty": req.length_penalty,
                         "max_new_tokens": req.max_new_tokens}, "provenance": served.provenance}


async def classify_route(state, served: Served, req: ClassifyRequest, request):
    return {"model": served.name, "text": req.text, **await state.run(served.name, "classify", (), 1, req)}


TEXT = Route("text", TextRequest, text, run_text, applies=lambda m: "stream" in m.CAPABILITIES,
             summary="a continuation of a prompt (server-sent events with stream: true)")
TRANSLATE = Route("translate", TranslateRequest, translate_route, run_translate,
                  summary="a translation (greedy or beam search)")
CLASSIFY = Route("classify", ClassifyRequest, classify_route, run_classify,
                 summary="a label, class probabilities and the attention weight of each token")
