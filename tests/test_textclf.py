"""The attention text classifier: pooling weights, padding, and that it learns a keyword rule by attending to it."""

import pytest
import torch

from genlab.models.textclf import PRESETS, TextClf, TextClfConfig

KEYWORD = 5


def build(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=30, num_classes=3, max_len=32, n_layer=2, n_head=4, d_model=32, dropout=0.0)
    cfg.update(kw)
    return TextClf(TextClfConfig(**cfg))


def ragged(n, seed=0, v=30, t=16):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    ids = torch.randint(4, v, (n, t), generator=g)
    return ids.masked_fill(torch.arange(t)[None] >= lengths[:, None], 0)


def test_presets_build_and_every_parameter_gets_a_gradient():
    for name, preset in PRESETS.items():
        cfg = TextClfConfig(vocab_size=100, num_classes=4)
        for key, value in preset.items():
            if key.startswith("model."):
                setattr(cfg, key[6:], value)
        assert sum(p.numel() for p in TextClf(cfg).parameters()) > 0, name
    model = build(dropout=0.1)
    out = model.loss({"ids": ragged(8), "y": torch.arange(8) % 3})
    assert set(out) >= {"loss", "acc"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_attention_weights_sum_to_one_over_tokens_and_vanish_on_padding():
    model = build()
    ids = ragged(10)
    probs, weights = model.predict(ids)
    assert probs.shape == (10, 3) and torch.allclose(probs.sum(1), torch.ones(10))
    assert weights.shape == ids.shape
    assert torch.all(weights[ids == 0] == 0)
    assert torch.allclose(weights.sum(1), torch.ones(10), atol=1e-6)
    assert torch.all(weights[ids != 0] > 0)


def test_padding_does_not_change_predictions():
    model = build().eval()
    ids = ragged(6)
    probs, weights = model.predict(ids)
    wider = torch.cat([ids, torch.zeros(6, 9, dtype=torch.long)], 1)
    probs2, weights2 = model.predict(wider)
    assert torch.allclose(probs, probs2, atol=1e-6) and torch.allclose(weights, weights2[:, :16], atol=1e-6)
    # lists are padded for you
    rows = [r[r != 0].tolist() for r in ids]
    assert torch.allclose(model.predict(rows)[0], probs, atol=1e-6)


def keyword_data(n, generator, v=30, t=16):
    """Random texts of tokens 6..v-1; class 1 texts contain the keyword once, at a random position."""
    lengths = torch.randint(4, t + 1, (n,), generator=generator)
    ids = torch.randint(6, v, (n, t), generator=generator).masked_fill(torch.arange(t)[None] >= lengths[:, None], 0)
    y = torch.randint(0, 2, (n,), generator=generator)
    where = (torch.rand(n, generator=generator) * lengths).long()
    ids[y == 1, where[y == 1]] = KEYWORD
    return {"ids": ids, "y": y}, where


def test_learns_a_keyword_rule_and_attends_to_the_keyword():
    model = build(num_classes=2, d_model=64, n_layer=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = model.loss(keyword_data(64, g)[0])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    batch, where = keyword_data(400, torch.Generator().manual_seed(1))
    probs, weights = model.predict(batch["ids"])
    right = probs.argmax(1) == batch["y"]
    assert right.float().mean() > 0.95
    hit = right & (batch["y"] == 1)
    on_keyword = weights.argmax(1)[hit] == where[hit]
    assert on_keyword.float().mean() > 0.8, f"keyword has the top weight in {on_keyword.float().mean():.0%}"


def test_not_a_generator_and_clear_errors():
    model = build()
    assert model.generative is False and not hasattr(model, "sample")   # it does not inherit one
    with pytest.raises(ValueError, match="max_len"):
        model.predict(torch.ones(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="classes"):
        build(num_classes=1)
    with pytest.raises(ValueError, match="labels"):
        model.loss({"ids": ragged(2)})
