"""Next-token sampling shared by the text families: temperature, top-k and top-p (nucleus) filtering.

Tokens are drawn on the CPU from the caller's `torch.Generator`, so a seed gives the same text on
every device.
"""

from __future__ import annotations

import torch

from genlab.models.controls import Control

# The knobs of `sample_next`, declared once for every family that offers them (genlab.models.controls).
DECODING = (Control("temperature", float, 1.0, 0.0, 10.0, help="sampling temperature, 0 = greedy"),
            Control("top_k", int, 0, 0, None, help="keep the k most likely tokens, 0 = off"),
            Control("top_p", float, 1.0, 0.01, 1.0, help="nucleus probability mass to keep, 1 = off"))


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the nucleus (Holtzman et al. 2020): the
    smallest set of most likely tokens whose probability reaches `top_p`. logits: (B, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens before it already reach top_p (the first token always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, generator: torch.Generator | None = None, *, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """One token id per row of logits (B, V) -> (B,). temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
    probs = logits.softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)
