"""Next-token filtering: top-k, top-p (the smallest set reaching p), temperature 0 = greedy."""

import torch

from genlab.models.sampling import filter_logits, sample_next


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05]])
    kept = lambda p: torch.isfinite(filter_logits(probs.log(), top_p=p))[0].nonzero().flatten().tolist()  # noqa: E731
    assert kept(0.5) == [1]                 # 0.5 alone reaches 0.5
    assert kept(0.6) == [1, 3]              # 0.5 + 0.3
    assert kept(0.85) == [0, 1, 3]          # + 0.1 = 0.9 >= 0.85
    assert kept(1.0) == [0, 1, 2, 3, 4]


def test_top_k_and_greedy():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[False, True, True, False]]
    assert sample_next(logits, temperature=0).item() == 1
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, g, top_k=1).item() for _ in range(20)}
    assert draws == {1}


def test_sampling_follows_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).expand(20000, 3)
    draws = sample_next(logits, torch.Generator().manual_seed(0), top_p=0.85)
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert abs(freq[0] - 2 / 3) < 0.02 and freq[2] == 0     # renormalised over {0.6, 0.3}
