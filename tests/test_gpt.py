"""GPT maths: causal mask, KV cache == recomputation (also past block_size, for rotary and learned
positions), the sliding window's reach, rotary positions' relativity, batched rows == one row alone,
weight tying, loss at init, overfitting a string, and the sampling contract (seeds, greedy, top_k,
<eos>, controls).

The helpers at the top are reused by test_lstm.py.
"""

import math

import pytest
import torch
from safetensors.torch import load as st_load

from genlab.data.tokenizers import BOS, EOS, PAD
from genlab.models.gpt import GPT, PRESETS, GPTConfig, prompt_ids
from genlab.runs import tensors_to_bytes
from genlab.registry import model_config

V = 50


def sharpen(model, std=0.5):
    """Random init gives near-uniform next-token distributions, under which a wrong cache or position
    barely moves a sampled token. Large embeddings give peaked, context-sensitive logits, so the
    equivalence tests below fail on any real discrepancy."""
    with torch.no_grad():
        emb = model.tok_emb if hasattr(model, "tok_emb") else model.emb
        emb.weight.normal_(0, std, generator=torch.Generator().manual_seed(7))
        if getattr(model, "pos_emb", None) is not None:
            model.pos_emb.weight.normal_(0, std, generator=torch.Generator().manual_seed(8))
    return model


def peaked(model, scale=10.0):
    """Rotary positions act through the attention scores only, which random init keeps near zero: scale the
    query and key/value projections so that where a key sits changes its weight visibly."""
    with torch.no_grad():
        for block in model.blocks:
            block.attn.q.weight.mul_(scale)
            block.attn.kv.weight.mul_(scale)
    return model


def gpt(**kw):
    cfg = dict(vocab_size=V, block_size=16, n_layer=2, n_head=2, d_model=32, dropout=0.0)
    cfg.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**cfg)).eval()


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def no_eos(model):
    """Make <eos> never the likeliest token, so sequences run their full length (tests of length)."""
    eos = torch.tensor([EOS])
    model.head.register_forward_hook(lambda module, args, out: out.index_fill(-1, eos, -1e4))
    return model


# ---- a string to overfit: distinct characters, so each token determines the next ----------------

TEXT = "genlab: quick!"
CHARS = {ch: i + 4 for i, ch in enumerate(TEXT)}  # ids 0..3 are reserved


def text_stream(repeats=40):
    """[<bos>, TEXT, <eos>] repeated, as one token stream."""
    return torch.tensor(([BOS] + [CHARS[c] for c in TEXT] + [EOS]) * repeats)


def overfit(model, steps=300, lr=3e-3, batch_size=16):
    """Train on random windows of `text_stream`; return the final loss."""
    stream, w = text_stream(), model.config.block_size + 1
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = seeded(0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - w, (batch_size,), generator=g)
        loss = model.loss({"ids": torch.stack([stream[s:s + w] for s in starts])})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return loss.item()


def check_overfit_and_generate(model):
    loss = overfit(model)
    assert loss < 0.1, f"a tiny model failed to overfit a repeated string: loss {loss:.3f}"
    out = model.sample(2, generator=seeded(), temperature=0, max_new_tokens=3 * len(TEXT))
    expected = [BOS] + [CHARS[c] for c in TEXT] + [EOS]
    # greedy generation reproduces the string and stops at <eos>: shorter than max_new_tokens
    assert out.tolist() == [expected, expected]


# ---- a scripted model: drives the shared decoding loop with known logits -------------------------

def scripted(model, rows):
    """Replace `model.decoder` by a step function whose greedy choice for row i at step t is rows[i][t];
    return a list that records the sequence length seen at each call."""
    calls = []

    def decoder(use_cache):
        def step(seq):
            t = len(calls)
            calls.append(seq.shape[1])
            logits = torch.zeros(seq.shape[0], model.config.vocab_size)
            for i, r in enumerate(rows):
                logits[i, r[t] if t < len(r) else 4] = 10.0
            return logits
        return step

    model.decoder = decoder
    return calls


def check_eos_contract(model):
    prompt = [BOS, 5, 6]
    calls = scripted(model, [[7, EOS, 9, 9, 9], [8, 8, 8, EOS, 9]])
    out = model.sample(2, cond=prompt, temperature=0, max_new_tokens=10)
    # row 0 ended at step 2 and is padded; the loop stopped once row 1 ended at step 4
    assert out.tolist() == [prompt + [7, EOS, PAD, PAD], prompt + [8, 8, 8, EOS]]
    assert calls == [3, 4, 5, 6], "the model was asked for more tokens after every row had ended"
    calls = scripted(model, [[7] * 20, [8] * 20])
    assert model.sample(2, cond=prompt, temperature=0, max_new_tokens=6).shape == (2, 3 + 6)
    streamed = list(model.stream(2, cond=prompt, temperature=0, max_new_tokens=3))
    assert len(streamed) == 3 and all(t.shape == (2,) and t.dtype == torch.long for t in streamed)


def check_controls(model):
    with pytest.raises(TypeError, match="temprature"):
        model.sample(2, temprature=0.5)
    with pytest.raises(TypeError, match="guidance"):
        model.stream(2, guidance=3.0)  # raised at the call, before the first token is asked for
    with pytest.raises(ValueError, match="top_p"):
        model.sample(2, top_p=0.0)
    with pytest.raises(ValueError, match="ids 0..49"):
        model.sample(2, cond=[1, V])


def check_seeds_and_greedy(model):
    kw = dict(cond=[BOS, 5], max_new_tokens=12)
    a = model.sample(4, generator=seeded(3), **kw)
    assert torch.equal(a, model.sample(4, generator=seeded(3), **kw))
    assert not torch.equal(a, model.sample(4, generator=seeded(4), **kw))
    greedy = model.sample(4, generator=seeded(3), temperature=0, **kw)
    assert torch.equal(greedy, model.sample(4, generator=seeded(9), top_k=1, **kw))
    assert (greedy == greedy[0]).all(), "greedy rows from one prompt must agree"


# ---- GPT ------------------------------------------------------------------------------------------


POS = ["rope", "learned"]


@pytest.mark.parametrize("pos", POS)
def test_causal_mask_hides_the_future(pos):
    model = sharpen(gpt(pos=pos))
    ids = torch.randint(4, V, (2, 12), generator=seeded())
    changed = ids.clone()
    changed[:, 6] = (ids[:, 6] - 4 + 1) % (V - 4) + 4
    a, b = model.logits(ids), model.logits(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-5)
    assert ((a[:, 6:] - b[:, 6:]).abs().amax(-1) > 1e-3).all(), "later positions must see the change"


@pytest.mark.parametrize("pos", POS)
def test_kv_cache_logits_equal_a_full_pass(pos):
    """Learned positions: up to block_size (16), then refused. Rotary: 40 tokens, where the cache keeps only
    its last 15 keys per layer and the full pass masks the same band."""
    model = sharpen(gpt(pos=pos))
    n = 16 if pos == "learned" else 40
    ids = torch.randint(4, V, (3, n), generator=seeded())
    full = model.logits(ids)
    cache = [{} for _ in model.blocks]
    pieces = [model.logits(ids[:, :5], cache=cache)]
    pieces += [model.logits(ids[:, t:t + 1], cache=cache, start_pos=t) for t in range(5, n)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=0, atol=1e-5)
    if pos == "learned":
        with pytest.raises(ValueError, match="block_size"):
            model.logits(ids[:, :1], cache=cache, start_pos=16)
    else:
        assert cache[0]["k"].shape[2] == 15, "a window of 16 needs only the last 15 keys"


def test_rope_sees_exactly_its_stacked_windows():
    """With rotary positions every layer looks block_size - 1 tokens back, so the last token's logits depend
    on exactly the last context_tokens = n_layer * (block_size - 1) + 1 tokens: the gradient of those logits
    with respect to the token embeddings is nonzero there and exactly zero further back."""
    for n_layer in (1, 3):
        model = gpt(n_layer=n_layer, block_size=8)
        reach = model.context_tokens
        assert reach == n_layer * 7 + 1
        ids = torch.randint(4, V, (1, reach + 6), generator=seeded())
        seen = []

        def keep(module, args, out):
            out.retain_grad()
            seen.append(out)
        hook = model.tok_emb.register_forward_hook(keep)
        model.logits(ids)[0, -1].square().sum().backward()
        hook.remove()
        grad = seen[0].grad[0].abs().amax(-1)                      # (T,): how much each input token matters
        assert (grad[-reach:] > 0).all(), (n_layer, grad)
        assert (grad[:-reach] == 0).all(), (n_layer, grad)


def test_rope_logits_depend_on_relative_positions_only():
    """Shifting every position leaves the logits alone; swapping two tokens changes the last token's logits,
    which one layer of attention without positions could not notice (it sees the same set of keys; deeper
    models learn some order from the causal mask alone)."""
    model = peaked(sharpen(gpt(n_layer=1)))
    ids = torch.randint(4, V, (2, 12), generator=seeded())
    at_zero = model.logits(ids)
    torch.testing.assert_close(model.logits(ids, start_pos=1000), at_zero, rtol=0, atol=1e-4)
    swapped = ids[:, [1, 0, *range(2, 12)]]
    assert (model.logits(swapped)[:, -1] - at_zero[:, -1]).abs().amax() > 1e-3, "order must matter"


def test_runs_written_before_rotary_positions_keep_learned_ones():
    from genlab.config import from_dict
    old = from_dict(GPTConfig, {"vocab_size": V, "block_size": 16})
    assert old.pos == "learned" and GPTConfig().pos == "rope"
    assert GPT(old).pos_emb is not None and gpt().pos_emb is None
    with pytest.raises(ValueError, match="even head width"):
        gpt(d_model=30, n_head=2)
    with pytest.raises(ValueError, match="model.pos"):
        gpt(pos="alibi")


def reference_greedy(model, prompt, steps):
    """Greedy decoding written out plainly: full recomputation on the last block_size tokens."""
    seq = prompt
    for _ in range(steps):
        nxt = model.logits(seq[:, -model.config.block_size:])[:, -1].argmax(-1)
        seq = torch.cat([seq, nxt[:, None]], 1)
    return seq


def head_logits_while_sampling(model, n, **kw):
    """model.sample(n, **kw) and the logits the head produced for each new token, (steps, n, V)."""
    seen = []
    hook = model.head.register_forward_hook(lambda module, args, out: seen.append(out[:, -1].clone()))
    try:
        out = model.sample(n, **kw)
    finally:
        hook.remove()
    return out, torch.stack(seen)


def check_step_logits_equal_recomputation(model, prompt, steps, recompute, temperature):
    """Cached decoding gives, at every step, the logits of a from-scratch pass `recompute(seq)` -> (n, V)
    over the sequence so far. Run on a random-init model (its outputs vary from step to step), so a
    stale cache or a wrong position shows in the logits even where it would not change a greedy token."""
    kw = dict(cond=prompt, temperature=temperature, max_new_tokens=steps)
    out, logits = head_logits_while_sampling(model, len(prompt), generator=seeded(1), use_cache=True, **kw)
    p = prompt.shape[1]
    assert out.shape == (len(prompt), p + steps) and logits.shape[0] == steps
    reference = torch.stack([recompute(out[:, :p + t]) for t in range(steps)])
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-5)
    assert reference.std(0).mean() > 1e-2, "the logits barely change between steps: the check proves little"
    assert torch.equal(out, model.sample(len(prompt), generator=seeded(1), use_cache=False, **kw))
    return out


def varied(pos):
    """A model whose logits change from step to step (what check_step_logits_equal_recomputation asks): at
    random init learned positions do that already; rotary ones need sharpened attention scores."""
    return peaked(sharpen(gpt(pos=pos))) if pos == "rope" else gpt(pos=pos)


def gpt_window(model):
    """Logits of the last token recomputed without a cache: learned positions over the last block_size tokens;
    rotary ones over the whole sequence so far (the band mask alone limits what each layer sees)."""
    if model.config.pos == "rope":
        return lambda seq: model.logits(seq)[:, -1]
    return lambda seq: model.logits(seq[:, -model.config.block_size:])[:, -1]


@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_kv_cache_generation_equals_recomputation_past_block_size(temperature, pos):
    model = no_eos(varied(pos))
    prompt = torch.tensor([[BOS, 5, 6, 7]] * 3)                     # 4 + 40 > context_tokens 31 > block_size 16
    out = check_step_logits_equal_recomputation(model, prompt, 40, gpt_window(model), temperature)
    if temperature == 0 and pos == "learned":
        assert torch.equal(out, reference_greedy(model, out[:, :4], 40))
    if temperature == 1:
        assert len({tuple(r) for r in out.tolist()}) == 3, "rows should differ at temperature 1"


@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_prompt_longer_than_block_size(temperature, pos):
    model = no_eos(varied(pos))
    prompt = torch.randint(4, V, (2, 40), generator=seeded())
    out = check_step_logits_equal_recomputation(model, prompt, 5, gpt_window(model), temperature)
    assert torch.equal(out[:, :40], prompt)
    if temperature == 0 and pos == "learned":
        assert torch.equal(out, reference_greedy(model, prompt, 5))


@pytest.mark.parametrize("pos", POS)
def test_rows_of_different_lengths_decode_as_each_alone(pos):
    """stream_rows (the server's batching) left-pads prompts into one cache; past block_size (rotary: the
    cache's sliding window and its padding columns trimmed together) every row still gets the tokens it gets
    alone."""
    model = no_eos(sharpen(gpt(pos=pos)))
    prompts = [[BOS, 5], [BOS, *range(4, 24)], [BOS, 9, 8, 7, 6, 5]]     # the second is longer than block_size
    knobs = [{"temperature": 1.0, "top_k": 0, "top_p": 1.0}] * 3
    steps = list(model.stream_rows(prompts, [seeded(i) for i in range(3)], knobs, [30, 30, 30]))
    for i, p in enumerate(prompts):
        alone = model.sample(1, cond=p, generator=seeded(i), max_new_tokens=30, **knobs[i])[0, len(p):]
        assert [s[i] for s in steps] == alone.tolist(), f"row {i}"


def test_weight_tying_shares_one_tensor():
    model = gpt()
    assert model.head.weight is model.tok_emb.weight
    n_unique = sum(p.numel() for p in model.parameters())
    assert n_unique == sum(p.numel() for n, p in model.named_parameters(remove_duplicate=False)
                           if n != "head.weight")


def test_save_load_round_trip_keeps_weights_tied():
    model = sharpen(gpt())
    blob = tensors_to_bytes(model.state_dict())  # as the run folder writes it (safetensors)
    fresh = gpt()
    fresh.load_state_dict(st_load(blob))
    assert fresh.head.weight is fresh.tok_emb.weight
    ids = torch.randint(4, V, (2, 10), generator=seeded())
    torch.testing.assert_close(fresh.logits(ids), model.logits(ids), rtol=0, atol=0)


def test_loss_at_init_is_log_vocab():
    model = gpt(vocab_size=200)
    ids = torch.randint(4, 200, (8, 17), generator=seeded())
    loss = model.loss({"ids": ids})["loss"].item()
    assert abs(loss - math.log(200)) < 0.05, f"loss at init {loss:.3f}, expected about ln V = {math.log(200):.3f}"


def test_loss_ignores_padding_and_rejects_long_windows():
    model = gpt()
    ids = torch.randint(4, V, (2, 9), generator=seeded())
    padded = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], 1)
    torch.testing.assert_close(model.loss({"ids": padded})["loss"], model.loss({"ids": ids})["loss"])
    with pytest.raises(ValueError, match="block_size"):
        model.loss({"ids": torch.ones(2, 18, dtype=torch.long)})


def test_overfits_a_repeated_string_and_regenerates_it():
    check_overfit_and_generate(gpt(block_size=24))


def test_seeded_sampling_and_greedy():
    check_seeds_and_greedy(sharpen(gpt(), std=0.1))  # (tied embeddings: larger ones only repeat the last token)


def test_generation_stops_at_eos():
    check_eos_contract(gpt())


def test_unknown_and_bad_controls_are_rejected():
    check_controls(gpt())


def test_prompts():
    dev = torch.device("cpu")
    assert prompt_ids(None, 3, V, dev).tolist() == [[BOS]] * 3
    assert prompt_ids([1, 5], 2, V, dev).tolist() == [[1, 5], [1, 5]]
    assert prompt_ids(torch.tensor([[1, 5], [1, 6]]), 2, V, dev).tolist() == [[1, 5], [1, 6]]
    with pytest.raises(ValueError, match="n=3"):
        prompt_ids(torch.ones(2, 4, dtype=torch.long), 3, V, dev)
    with pytest.raises(ValueError, match="empty"):
        prompt_ids([], 2, V, dev)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_build(preset):
    assert GPT(model_config("gpt", preset, vocab_size=100)).config.vocab_size == 100
