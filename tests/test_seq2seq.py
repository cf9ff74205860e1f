"""The seq2seq Transformer's maths: masks, cache, length penalty, beam search, and that it learns."""

import itertools
import math

import pytest
import torch

from genlab.data.tokenizers import BOS, EOS, PAD
from genlab.models.seq2seq import PRESETS, Seq2Seq, Seq2SeqConfig, gnmt_length_penalty


def build(seed=0, vocab_size=20, scale=1.0, **kw):
    """A random tiny model in eval mode; `scale` sharpens its next-token distributions."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, max_len=24, n_layer=2, n_head=2, d_model=16, dropout=0.0)
    cfg.update(kw)
    model = Seq2Seq(Seq2SeqConfig(**cfg)).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(scale)
    return model


def sources(n, v, seed=1, lo=2, hi=7):
    """n random sources, tokens 4..v-1 then <eos>, right-padded: (n, hi + 1)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, hi + 1, dtype=torch.long)
    for i, length in enumerate(torch.randint(lo, hi + 1, (n,), generator=g).tolist()):
        out[i, :length] = torch.randint(4, v, (length,), generator=g)
        out[i, length] = EOS
    return out


def test_gnmt_length_penalty_formula():
    assert gnmt_length_penalty(1, 1.0).item() == pytest.approx(1.0)
    assert gnmt_length_penalty(7, 0.6).item() == pytest.approx(2 ** 0.6)
    assert gnmt_length_penalty(13, 1.0).item() == pytest.approx(3.0)
    assert torch.allclose(gnmt_length_penalty(torch.tensor([3, 40]), 0.0), torch.ones(2))
    model = build()
    src = sources(3, 20)
    hyp = model.generate(src, 6)
    raw, normed = model.sequence_logprob(src, hyp), model.sequence_logprob(src, hyp, alpha=0.7)
    lengths = (hyp[:, 1:] != PAD).sum(1).float()
    assert torch.allclose(normed, raw / ((5 + lengths) / 6) ** 0.7)


def test_presets_build_and_every_parameter_gets_a_gradient():
    for name, preset in PRESETS.items():
        cfg = Seq2SeqConfig(vocab_size=100)
        for key, value in preset.items():
            if key.startswith("model."):
                setattr(cfg, key[6:], value)
        assert sum(p.numel() for p in Seq2Seq(cfg).parameters()) > 0, name
    model = build(dropout=0.1).train()
    src = sources(4, 20)
    out = model.loss({"src": src, "tgt": torch.cat([torch.full((4, 1), BOS), src], 1)})
    assert set(out) >= {"loss", "token_acc"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_loss_ignores_target_padding_and_smoothing_is_optional():
    model = build(label_smoothing=0.0)
    src = sources(4, 20)
    tgt = torch.cat([torch.full((4, 1), BOS), src], 1)
    a = model.loss({"src": src, "tgt": tgt})
    b = model.loss({"src": src, "tgt": torch.cat([tgt, torch.zeros(4, 3, dtype=torch.long)], 1)})
    assert torch.allclose(a["loss"], b["loss"], atol=1e-6) and torch.equal(a["token_acc"], b["token_acc"])
    assert torch.allclose(a["loss"], a["nll"])
    smoothed = build(label_smoothing=0.1).loss({"src": src, "tgt": tgt})
    assert torch.allclose(smoothed["nll"], a["nll"]) and not torch.allclose(smoothed["loss"], a["loss"])


def test_decoder_is_causal():
    model = build()
    src = sources(2, 20)
    tgt = torch.randint(4, 20, (2, 9))
    tgt[:, 0] = BOS
    before = model.forward_logits(src, tgt)
    changed = tgt.clone()
    changed[:, 5] = (changed[:, 5] - 4 + 1) % 16 + 4   # another real token
    after = model.forward_logits(src, changed)
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-5)
    assert not torch.allclose(before[:, 5:], after[:, 5:], atol=1e-3)


def test_encoder_ignores_padded_source_positions():
    model = build()
    src = sources(3, 20, lo=3, hi=5)
    tgt = torch.cat([torch.full((3, 1), BOS), torch.randint(4, 20, (3, 6))], 1)
    ref = model.forward_logits(src, tgt)
    # more padding columns change nothing
    wider = torch.cat([src, torch.zeros(3, 4, dtype=torch.long)], 1)
    assert torch.allclose(ref, model.forward_logits(wider, tgt), atol=1e-5)
    # what sits in padded positions (marked by the mask) changes nothing
    noisy = wider.clone()
    pad = wider == PAD
    noisy[pad] = torch.randint(4, 20, (int(pad.sum()),), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(ref, model.forward_logits(noisy, tgt, src_pad_mask=pad), atol=1e-5)
    # ...whereas the same tokens unmasked do change the output (the check above can fail)
    assert not torch.allclose(ref, model.forward_logits(noisy, tgt), atol=1e-3)


def test_cached_decoding_equals_uncached():
    model = build()
    src = sources(3, 20)
    tgt = torch.cat([torch.full((3, 1), BOS), torch.randint(2, 20, (3, 8))], 1)
    memory, pad = model.encode(src)
    full = model.decode(tgt, memory, pad)
    cache = model.new_cache()
    steps = torch.stack([model.decode_step(tgt[:, i], memory, pad, cache) for i in range(tgt.shape[1])], 1)
    assert torch.allclose(full, steps, atol=1e-5)
    for temperature in (0.0, 1.0):
        a = model.generate(src, 10, torch.Generator().manual_seed(0), temperature=temperature)
        b = model.generate(src, 10, torch.Generator().manual_seed(0), temperature=temperature, use_cache=False)
        assert torch.equal(a, b)


def reference_greedy(model, src, steps):
    """Greedy decoding written out plainly: argmax of a full teacher-forced pass over the prefix (no
    cache, no shared decoding code), never <pad> or <bos>; rows are padded with 0 after their <eos>."""
    tgt = torch.full((len(src), 1), BOS)
    ended = torch.zeros(len(src), dtype=torch.bool)
    for _ in range(steps):
        logits = model.forward_logits(src, tgt)[:, -1]
        logits[:, [PAD, BOS]] = float("-inf")
        nxt = logits.argmax(-1).masked_fill(ended, PAD)
        tgt = torch.cat([tgt, nxt[:, None]], 1)
        ended |= nxt == EOS
        if ended.all():
            break
    return tgt


def briefly_trained(seed):
    """A random model's greedy output is one token repeated whatever the source; 30 steps on the
    reversal task make it depend on the source (and end at different lengths), so a check can fail."""
    model = build(seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(30):
        loss = model.loss(digit_pairs(32, g))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("seed", range(4))
def test_beam_of_width_one_is_exactly_greedy(seed):
    model = briefly_trained(seed)
    src = sources(12, 20, seed=seed)
    greedy = reference_greedy(model, src, 12)
    assert len({tuple(r) for r in greedy[:, 1:].tolist()}) > 4, "the rows should differ: the check proves little"
    for alpha in (0.0, 1.0):
        assert torch.equal(model.beam_search(src, 1, 12, alpha), greedy)
    assert torch.equal(model.generate(src, 12), greedy)
    full = reference_greedy(model, src, model.config.max_len - 1)
    plain = [[t for t in row[1:] if t not in (PAD, EOS)] for row in full.tolist()]
    assert model.translate(src, beam=1) == plain and model.translate(src) == plain


def test_beam_search_is_exact_when_the_beam_holds_every_hypothesis():
    """vocab 6 leaves 4 allowed tokens (<eos>, <unk>, 4, 5); with 4 new tokens a beam of 128 holds
    all 40 + 81 hypotheses, so the result must be the brute-force best by log P / lp."""
    n = 4
    outcomes = set()
    for seed in range(3):
        model = build(seed, vocab_size=6, scale=2.0)
        src = sources(4, 6, seed=seed, lo=1, hi=3)
        hyps = [list(p) + [EOS] for k in range(n) for p in itertools.product([3, 4, 5], repeat=k)]
        hyps += [list(p) for p in itertools.product([3, 4, 5], repeat=n)]  # cut off at max_new_tokens
        cand = torch.zeros(len(hyps), n + 1, dtype=torch.long)
        for i, h in enumerate(hyps):
            cand[i, 0] = BOS
            cand[i, 1:len(h) + 1] = torch.tensor(h)
        for alpha in (0.0, 1.0, 3.0):
            best = model.beam_search(src, 128, n, alpha)
            for i in range(src.shape[0]):
                scores = model.sequence_logprob(src[i:i + 1].expand(len(hyps), -1), cand, alpha)
                j = int(scores.argmax())
                got = model.sequence_logprob(src[i:i + 1], best[i:i + 1], alpha)
                assert got.item() == pytest.approx(scores[j].item(), abs=1e-5)
                assert best[i, 1:].tolist()[: len(hyps[j])] == hyps[j]
                outcomes.add((seed, i, alpha == 0.0, len(hyps[j])))
    # the penalty matters: some source's best length differs between alpha = 0 and alpha > 0
    lengths = {}
    for seed, i, raw, length in outcomes:
        lengths.setdefault((seed, i), set()).add(length)
    assert any(len(s) > 1 for s in lengths.values())


def test_beam_search_finds_hypotheses_no_worse_than_greedy():
    """Beam search is not a theorem-level improvement on greedy (a pruned prefix can win), but with a
    shrinking beam the greedy path stays in the beam on these random models: never worse by
    log P / lp, often better. A broken beam (wrong cache reordering or scores) fails this."""
    better = 0
    for seed, scale, alpha in itertools.product(range(4), (1.0, 2.0), (0.0, 1.0)):
        model = build(seed, vocab_size=12, scale=scale, n_layer=1)
        src = sources(16, 12, seed=seed)
        greedy = model.sequence_logprob(src, model.generate(src, 12), alpha)
        for k in (2, 4):
            hyp, reported = model.beam_search(src, k, 12, alpha, return_scores=True)
            assert hyp[:, 0].eq(BOS).all()
            score = model.sequence_logprob(src, hyp, alpha)
            assert torch.allclose(reported, score, atol=1e-5)  # the incremental scores are the real ones
            assert torch.all(score >= greedy - 1e-5), (seed, scale, alpha, k)
            better += int((score > greedy + 1e-4).sum())
    assert better > 50


def digit_pairs(n, generator, lo=2, hi=6):
    """Reversal task: src = digits + <eos>, tgt = <bos> + reversed digits + <eos> (digits are ids 4..13)."""
    lengths = torch.randint(lo, hi + 1, (n,), generator=generator)
    digits = torch.randint(4, 14, (n, hi), generator=generator)
    pos = torch.arange(hi)[None]
    src = torch.zeros(n, hi + 1, dtype=torch.long)
    src[:, :hi] = digits.masked_fill(pos >= lengths[:, None], PAD)
    src[torch.arange(n), lengths] = EOS
    rev_idx = (lengths[:, None] - 1 - pos).clamp(min=0)
    rev = digits.gather(1, rev_idx).masked_fill(pos >= lengths[:, None], PAD)
    tgt = torch.zeros(n, hi + 2, dtype=torch.long)
    tgt[:, 0], tgt[:, 1:hi + 1] = BOS, rev
    tgt[torch.arange(n), lengths + 1] = EOS
    return {"src": src, "tgt": tgt}


def test_learns_to_reverse_digit_strings():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=14, max_len=16, n_layer=1, n_head=4, d_model=64, dropout=0.0,
                                  label_smoothing=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for step in range(400):
        for group in opt.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 50)
        loss = model.loss(digit_pairs(64, g))["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    test = digit_pairs(200, torch.Generator().manual_seed(123))
    refs = [[t for t in row[1:] if t not in (PAD, EOS)] for row in test["tgt"].tolist()]
    for beam in (1, 4):
        hyps = model.translate(test["src"], beam=beam)
        exact = sum(h == r for h, r in zip(hyps, refs)) / len(refs)
        assert exact > 0.9, f"beam={beam}: exact match {exact:.2f}"
    assert model.translate([5, 6, 7]) == [[7, 6, 5]]


def test_sample_shape_padding_determinism_and_controls():
    model = build(scale=2.0)
    src = [5, 6, 7, 8]
    a = model.sample(6, cond=src, generator=torch.Generator().manual_seed(7), max_new_tokens=10)
    b = model.sample(6, cond=src, generator=torch.Generator().manual_seed(7), max_new_tokens=10)
    c = model.sample(6, cond=src, generator=torch.Generator().manual_seed(8), max_new_tokens=10)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.long and a.shape[0] == 6 and a.shape[1] <= 11 and a[:, 0].eq(BOS).all()
    for row in a.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1:])
        assert PAD not in row[: row.index(EOS) if EOS in row else len(row)]
    greedy = model.sample(2, cond=src, temperature=0, max_new_tokens=10)
    assert [[t for t in r[1:] if t not in (PAD, EOS)] for r in greedy.tolist()] == model.translate([src] * 2, max_new_tokens=10)
    beam = model.sample(2, cond=torch.tensor([src, src[:2] + [EOS, PAD]]), beam=3, max_new_tokens=10)
    assert beam.shape[0] == 2 and beam[:, 0].eq(BOS).all()
    assert model.sample(3).shape[0] == 3  # cond=None: the empty source
    with pytest.raises(TypeError, match="bogus"):
        model.sample(2, cond=src, bogus=1)
    with pytest.raises(ValueError, match="source rows"):
        model.sample(3, cond=torch.tensor([src, src]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.sample(2, cond=src, max_new_tokens=100)
    with pytest.raises(ValueError, match="max_len"):
        model.translate(list(range(4, 20)) * 2)


def test_translate_accepts_lists_and_tensors():
    model = build(scale=2.0)
    one = model.translate([5, 6, 7])
    assert one == model.translate([[5, 6, 7, EOS]]) == model.translate(torch.tensor([[5, 6, 7, EOS, PAD]]))
    many = model.translate([[5, 6, 7], [9, 10]], beam=2)
    assert len(many) == 2 and all(isinstance(t, int) for t in many[0])
    assert math.isfinite(model.sequence_logprob([[5, 6, 7]], model.generate(model._sources([5, 6, 7]), 5)).item())
