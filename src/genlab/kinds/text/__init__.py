"""The text kinds: a token stream (language models), text pairs (translation) and labelled texts
(classification). They share the data layer (genlab.data.text), the tokenizer saved in the run, and the text
metrics; each has its own route and its own evaluation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from genlab.data.text import TEXT_BUILTINS
from genlab.kinds.base import CardText, Kind
from genlab.kinds.text.evaluate import evaluate_text_run
from genlab.kinds.text.prepare import prepare_text

TEXT_LIMITS = ("Metric caveats: perplexity is per token, so it compares runs only with the same tokenizer "
               "(bits per character compares across tokenizers); diversity and copy figures depend on N and on "
               "the sampling settings recorded in `eval.json`.",
               "The copied-span test **only catches verbatim copies** of 8 or more tokens.")
VOCAB, CLASSES = 40, 3   # the contract suite's tiny vocabulary and class count


class TextKind(Kind):
    """One text task; `name` is the task genlab.data.text loads ("lm", "pairs" or "labels")."""

    def prepare(self, cfg, run_dir: Path, *, resume: bool):
        return prepare_text(cfg, run_dir, resume)

    def datasets(self) -> dict[str, str]:
        return {name: text for name, (task, text) in TEXT_BUILTINS.items() if task == self.name}

    def evaluate(self, run_dir: Path, **kwargs):
        return evaluate_text_run(run_dir, **kwargs)

    def tiny(self, cfg, *, labelled: bool) -> None:
        cfg.vocab_size = VOCAB
        if hasattr(cfg, "num_classes"):
            cfg.num_classes = CLASSES

    def example(self, cfg, n: int, generator: torch.Generator) -> dict:
        ids = torch.randint(4, VOCAB, (n, 17), generator=generator)
        if self.name == "lm":
            return {"ids": ids}
        if self.name == "pairs":
            return {"src": torch.cat([ids[:, :9], torch.full((n, 1), 2)], 1),
                    "tgt": torch.cat([torch.ones(n, 1, dtype=torch.long), ids[:, 9:], torch.full((n, 1), 2)], 1)}
        return {"ids": ids, "y": torch.arange(n) % CLASSES}

    def sample_kwargs(self, model, n: int) -> dict:
        return {"cond": [5, 6, 7], "max_new_tokens": 6, "temperature": 1.0}


class LMKind(TextKind):
    def server_controls(self, controls: dict, settings) -> dict:
        """The text route's own default for max_new_tokens (TextRequest's), within the server's limit."""
        from genlab.kinds.text.serve import TEXT_MAX_NEW_TOKENS

        short = min(TEXT_MAX_NEW_TOKENS, settings.max_new_tokens)
        return {**controls, "max_new_tokens": replace(controls["max_new_tokens"], default=short)}


def _route(name: str):
    """The route `name` of genlab.kinds.text.serve, imported when the server asks (FastAPI: only for the server)."""
    def routes():
        from genlab.kinds.text import serve

        return (getattr(serve, name),)

    return routes


LM = LMKind("lm", "text", CardText("text", TEXT_LIMITS, uses=(
    "Generated code is unreviewed and may be wrong or unsafe: never run it unread.",)), serve=_route("TEXT"),
    sample_suffix=".txt", conditioning="prompt", extras={"instead": "for text runs use `genlab generate`"})
PAIRS = TextKind("pairs", "text pairs", CardText("text", TEXT_LIMITS), serve=_route("TRANSLATE"), sample_suffix=".txt",
                 conditioning="source text", extras={"instead": "translate with `genlab translate`"})
LABELS = TextKind("labels", "labelled text", CardText("text", TEXT_LIMITS), serve=_route("CLASSIFY"),
                  sample_suffix=".txt", conditioning="text", extras={"instead": "classify texts with `genlab classify`"})
