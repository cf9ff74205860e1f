"""GPT maths: causal mask, KV cache == recomputation (also past block_size), weight tying, loss at
init, overfitting a string, and the sampling contract (seeds, greedy, top_k, <eos>, controls).

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
        if hasattr(model, "pos_emb"):
            model.pos_emb.weight.normal_(0, std, generator=torch.Generator().manual_seed(8))
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


def test_causal_mask_hides_the_future():
    model = sharpen(gpt())
    ids = torch.randint(4, V, (2, 12), generator=seeded())
    changed = ids.clone()
    changed[:, 6] = (ids[:, 6] - 4 + 1) % (V - 4) + 4
    a, b = model.logits(ids), model.logits(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-5)
    assert ((a[:, 6:] - b[:, 6:]).abs().amax(-1) > 1e-3).all(), "later positions must see the change"


def test_kv_cache_logits_equal_a_full_pass():
    model = sharpen(gpt())
    ids = torch.randint(4, V, (3, 16), generator=seeded())
    full = model.logits(ids)
    cache = [{} for _ in model.blocks]
    pieces = [model.logits(ids[:, :5], cache=cache)]
    pieces += [model.logits(ids[:, t:t + 1], cache=cache, start_pos=t) for t in range(5, 16)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        model.logits(ids[:, :1], cache=cache, start_pos=16)


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


def gpt_window(model):
    """Logits of the last token, recomputed over the last block_size tokens (no cache)."""
    return lambda seq: model.logits(seq[:, -model.config.block_size:])[:, -1]


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_kv_cache_generation_equals_recomputation_past_block_size(temperature):
    model = no_eos(gpt())
    prompt = torch.tensor([[BOS, 5, 6, 7]] * 3)                     # 4 + 30 > block_size 16
    out = check_step_logits_equal_recomputation(model, prompt, 30, gpt_window(model), temperature)
    if temperature == 0:
        assert torch.equal(out, reference_greedy(model, out[:, :4], 30))
    else:
        assert len({tuple(r) for r in out.tolist()}) == 3, "rows should differ at temperature 1"


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_prompt_longer_than_block_size(temperature):
    model = no_eos(gpt())
    prompt = torch.randint(4, V, (2, 40), generator=seeded())
    out = check_step_logits_equal_recomputation(model, prompt, 5, gpt_window(model), temperature)
    assert torch.equal(out[:, :40], prompt)
    if temperature == 0:
        assert torch.equal(out, reference_greedy(model, prompt, 5))


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
    check_seeds_and_greedy(sharpen(gpt()))


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
