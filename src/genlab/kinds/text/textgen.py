"""Text in, text out, for trained text runs: generate, translate and classify (with attention).

These wrap the families' id-level methods with the run's tokenizer; the CLI and the server call them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch
from torch import nn

from genlab import registry
from genlab.data.text_loader import clip_ids, wrap_src
from genlab.data.tokenizers import EOS
from genlab.errors import UsageError
from genlab.loading import as_model


def _model(run, kind: str, what: str) -> nn.Module:
    """The loaded run, which must be of `kind`: `what` (e.g. "translation") needs it."""
    model = as_model(run)
    if registry.get(model.family).kind != kind or model.run is None or model.run.tokenizer is None:
        raise UsageError(f"{model.run.path if model.run else run} is a {model.family} run; {what} needs a run of "
                         f"{' or '.join(registry.families_of(kind))}")
    return model


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def encode_prompt(model: nn.Module, text: str) -> list[int]:
    """A prompt as ids; characters outside a character-level vocabulary are an error naming them. An
    empty prompt is [<eos>]: training text starts after an <eos>."""
    return model.run.tokenizer.encode(text, strict=True) if text else [EOS]


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """Text up to (not including) the first stop string."""
    cuts = [text.index(s) for s in stop or [] if s and s in text]
    return text[:min(cuts)] if cuts else text


def generate(run, prompt: str = "", n: int = 1, *, seed: int = 0, stop: list[str] | None = None,
             **controls) -> list[str]:
    """n continuations of `prompt` (prompt included), each cut at the first `stop` string after the prompt."""
    model = _model(run, "lm", "text generation")
    cond = encode_prompt(model, prompt)
    ids = model.sample(n, cond=cond, generator=torch.Generator().manual_seed(seed), **controls)
    texts = [model.run.tokenizer.decode(row.tolist()) for row in ids]
    return [prompt + cut_at_stop(t[len(prompt):], stop) if t.startswith(prompt) else cut_at_stop(t, stop)
            for t in texts]


def stream(run, prompt: str = "", *, seed: int = 0, **controls):
    """Yield decoded text pieces of one generation as the tokens are produced."""
    model = _model(run, "lm", "text generation")
    cond = encode_prompt(model, prompt)
    for token in model.stream(1, cond=cond, generator=torch.Generator().manual_seed(seed), **controls):
        if int(token[0]) != 0:
            yield model.run.tokenizer.decode([int(token[0])])


def translate(run, texts: list[str], *, beam: int = 1, length_penalty: float = 1.0,
              max_new_tokens: int | None = None) -> list[str]:
    """Translate each text (batched) with greedy (beam=1) or beam search."""
    model = _model(run, "pairs", "translation")
    rows = [wrap_src(model.run.tokenizer.encode(t, strict=True), model.config.max_len) for t in texts]
    src = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for i, r in enumerate(rows):
        src[i, :len(r)] = torch.tensor(r)
    out = model.translate(src.to(_device(model)), beam=beam, length_penalty=length_penalty,
                          max_new_tokens=max_new_tokens)
    return [model.run.tokenizer.decode(ids) for ids in out]


@dataclass
class Classification:
    label: str
    probs: dict[str, float]
    tokens: list[str]          # the text split into the model's tokens
    weights: list[float]       # attention-pooling weight of each token (sums to 1)


def classify(run, texts: list[str]) -> list[Classification]:
    """Predicted class, class probabilities and per-token attention weights for each text."""
    model = _model(run, "labels", "classification")
    tok = model.run.tokenizer
    classes = _classes(model)
    rows = [clip_ids(tok.encode(text), model.config.max_len) for text in texts]
    probs, weights = model.predict(rows)  # one padded batch; padding gets no attention
    out = []
    for i, ids in enumerate(rows):
        p = probs[i].tolist()
        out.append(Classification(classes[max(range(len(p)), key=p.__getitem__)], dict(zip(classes, p)),
                                  [tok.decode([t]) for t in ids], weights[i, :len(ids)].tolist()))
    return out


def _classes(model: nn.Module) -> list[str]:
    return list(model.run.classes if model.run else ()) or [str(i) for i in range(model.config.num_classes)]


def shade_terminal(c: Classification) -> str:
    """Tokens on a background whose strength follows their attention weight (ANSI 256-colour)."""
    top = max(c.weights) or 1.0
    ramp = [231, 230, 229, 228, 227, 226, 220, 214, 208, 202]  # white -> orange
    parts = [f"\x1b[48;5;{ramp[min(9, int(w / top * 9.99))]}m\x1b[30m{t}\x1b[0m" for t, w in zip(c.tokens, c.weights)]
    return "".join(parts)


def explain_html(items: list[tuple[str, Classification]]) -> str:
    """A page with each text's tokens shaded by attention weight, and its class probabilities."""
    blocks = []
    for text, c in items:
        top = max(c.weights) or 1.0
        spans = "".join(f'<span title="{w:.3f}" style="background:rgba(255,140,0,{w / top:.2f})">'
                        f"{html.escape(t)}</span>" for t, w in zip(c.tokens, c.weights))
        probs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c.probs.items(), key=lambda kv: -kv[1])[:3])
        blocks.append(f"<div class=item><p class=label>{html.escape(c.label)} <small>({probs})</small></p>"
                      f"<p class=text>{spans}</p></div>")
    style = ("body{font-family:sans-serif;max-width:50em;margin:2em auto}.text{font-family:monospace;"
             "white-space:pre-wrap;line-height:1.6}.label{font-weight:bold}.item{border-bottom:1px solid #ddd}")
    return (f"<!doctype html><meta charset=utf-8><title>genlab attention</title><style>{style}</style>"
            "<h1>Attention weights of the prediction</h1>" + "".join(blocks))
