"""Self-speculative decoding: exactly plain greedy, exactly the plain sampling law, and honest statistics."""

from __future__ import annotations

import pytest
import torch

from multitoken import MTPModel
from multitoken.decoding.generate import generate, pad_prompts
from multitoken.decoding.sampling import probs_from_logits
from multitoken.decoding.speculative import speculative_generate
from tests.conftest import counting_model, sharp_model, tiny_model_config


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_future", [2, 4])
def test_greedy_equals_plain_greedy_for_every_draft_len_and_batch(seed, n_future):
    model = sharp_model(seed, n_future)
    gen = torch.Generator().manual_seed(seed)
    for draft_len in range(1, n_future):
        for batch_size in (1, 2, 3, 4):
            prompts = [torch.randint(0, 16, (int(torch.randint(1, 9, (), generator=gen)),), generator=gen).tolist()
                       for _ in range(batch_size)]
            padded, lengths = pad_prompts(prompts)
            plain = generate(model, padded, 24, lengths=lengths)
            fast, stats = speculative_generate(model, padded, 24, draft_len=draft_len, lengths=lengths)
            assert torch.equal(fast, plain), (draft_len, batch_size)
            assert stats.forwards <= 24 and len(stats.acceptance_per_position) == draft_len


def test_batch_rows_equal_single_row_decoding():
    model = sharp_model(7, 4)
    prompts = [[1], [2, 3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13], [5, 5]]
    padded, lengths = pad_prompts(prompts)
    batch, _ = speculative_generate(model, padded, 30, lengths=lengths)
    for row, ids in enumerate(prompts):
        alone, _ = speculative_generate(model, torch.tensor([ids]), 30)
        assert torch.equal(batch[row], alone[0]), row


def test_generation_up_to_the_end_of_the_context():
    """Blocks are cut short near the end of the context instead of running past the position tables."""
    model = sharp_model(3, 4)
    prompt = torch.randint(0, 16, (1, 10))
    fast, _ = speculative_generate(model, prompt, 38)  # 10 + 38 = 48 = max_seq_len
    assert torch.equal(fast, generate(model, prompt, 38))


# --- heads right or wrong by construction: acceptance counts we can predict --------------------------------------

def test_heads_always_right_accept_every_draft():
    model = counting_model(4)
    out, stats = speculative_generate(model, torch.tensor([[5]]), 40)
    assert out[0].tolist() == [(6 + i) % 32 for i in range(40)]
    assert stats.tau == 4.0 and stats.acceptance_per_position == [1.0, 1.0, 1.0]
    assert stats.forwards == 10  # 40 tokens, 4 per forward


def test_heads_never_right_accept_nothing():
    model = counting_model(4, wrong_heads=frozenset({2, 3, 4}))
    out, stats = speculative_generate(model, torch.tensor([[5]]), 20)
    assert out[0].tolist() == [(6 + i) % 32 for i in range(20)]  # still exact
    assert stats.tau == 1.0 and stats.acceptance_per_position == [0.0, 0.0, 0.0] and stats.forwards == 20


def test_heads_sometimes_right_give_the_expected_counts():
    # Head 2 always right, heads 3 and 4 never: every step accepts exactly draft 1, so 2 tokens per forward.
    model = counting_model(4, wrong_heads=frozenset({3, 4}))
    out, stats = speculative_generate(model, torch.tensor([[0]]), 30)
    assert out[0].tolist() == [(1 + i) % 32 for i in range(30)]
    assert stats.tau == 2.0 and stats.acceptance_per_position == [1.0, 0.0, 0.0] and stats.forwards == 15


# --- sampling: the same law as plain sampling -----------------------------------------------------------------------

def _chi_square_p_value(observed: torch.Tensor, expected_probs: torch.Tensor) -> float:
    keep = expected_probs > 0
    n = observed.sum()
    expected = expected_probs[keep] * n
    stat = ((observed[keep] - expected) ** 2 / expected).sum()
    dof = torch.tensor(float(keep.sum() - 1), dtype=torch.float64)
    return float(torch.special.gammaincc(dof / 2, stat.double() / 2))  # chi-square survival function


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.7, 3, None), (1.3, None, 0.9)])
def test_speculative_sampling_matches_the_exact_plain_distribution(temperature, top_k, top_p):
    """Draw many 2-token continuations at once (a batch of identical prompts) and compare the joint histogram of
    (token 1, token 2) with the exact plain-sampling law computed from the model by enumeration."""
    torch.manual_seed(0)
    vocab = 6
    model = MTPModel(tiny_model_config(vocab_size=vocab, n_future=3, n_layer=4, max_seq_len=16)).eval()
    with torch.no_grad():
        model.output.weight.mul_(4)  # peaked enough that drafts are often accepted, so both paths are exercised
    prompt = torch.tensor([[1, 2, 3]])
    draws = 6000
    out, stats = speculative_generate(model, prompt.repeat(draws, 1), 2, temperature=temperature, top_k=top_k,
                                      top_p=top_p, generator=torch.Generator().manual_seed(1))
    assert 0 < stats.acceptance_per_position[0] < 1  # accepted and rejected drafts both occurred
    with torch.no_grad():
        p1 = probs_from_logits(model(prompt)[0, -1], temperature, top_k, top_p)  # (V,)
        seconds = torch.cat([prompt.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)
        p2 = probs_from_logits(model(seconds)[:, -1], temperature, top_k, top_p)  # (V, V): row = token 1
        # Sanity of the test itself: drafts taken as-is (no rejection) would be caught.
        bad = probs_from_logits(model(prompt, return_all_heads=True)[0, -1, 1], temperature, top_k, top_p)
    exact = (p1[:, None] * p2).flatten()
    observed = torch.bincount(out[:, 0] * vocab + out[:, 1], minlength=vocab * vocab).double()
    assert _chi_square_p_value(observed, exact.double()) > 1e-3
    wrong = (p1[:, None] * bad[None, :]).flatten()
    assert _chi_square_p_value(observed, wrong.double()) < 1e-3


def test_bad_draft_lengths_and_single_head_models_are_refused():
    model = sharp_model(0, 3)
    prompt = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="use 1..2"):
        speculative_generate(model, prompt, 5, draft_len=3)
    with pytest.raises(ValueError, match="use 1..2"):
        speculative_generate(model, prompt, 5, draft_len=0)
    with pytest.raises(ValueError, match="no extra heads"):
        speculative_generate(MTPModel(tiny_model_config(n_future=1)), prompt, 5)
