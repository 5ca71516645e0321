"""Decoding with a draft vocabulary: the extra heads propose only its tokens, and the output stays exactly the
model's own (greedy token for token; sampling in distribution)."""

from __future__ import annotations

import pytest
import torch

from multitoken import MTPModel
from multitoken.decoding.generate import generate, pad_prompts
from multitoken.decoding.sampling import probs_from_logits
from multitoken.decoding.speculative import speculative_generate
from multitoken.decoding.tree import DraftTree
from tests.conftest import counting_model, tiny_model_config
from tests.decoding.test_speculative import _chi_square_p_value


def _with_draft_vocab(model: MTPModel, ids: list[int]) -> MTPModel:
    """The same weights, the extra heads drafting over `ids` only."""
    import dataclasses

    config = dataclasses.replace(model.config, draft_vocab=len(ids))
    state = {**model.state_dict(), "draft_ids": torch.tensor(ids)}
    return MTPModel.from_state_dict(config, state).eval()


def test_draft_logits_are_the_full_logits_outside_the_vocabulary_removed():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(vocab_size=16, n_future=3, n_layer=4)).eval()
    ids = [0, 2, 5, 7, 11, 13]
    drafting = _with_draft_vocab(model, ids)
    idx = torch.randint(0, 16, (2, 9))
    with torch.no_grad():
        full, narrowed = model(idx, return_all_heads=True), drafting(idx, return_all_heads=True)
    outside = torch.ones(16, dtype=torch.bool)
    outside[ids] = False
    assert torch.equal(narrowed[:, :, 0], full[:, :, 0])  # head 1 scores every token
    expected = full[:, :, 1:].masked_fill(outside, float("-inf"))
    torch.testing.assert_close(narrowed[:, :, 1:], expected, rtol=1e-6, atol=1e-6)
    assert not torch.equal(narrowed[:, :, 1:].argmax(-1), full[:, :, 1:].argmax(-1))  # the narrowing shows


def test_heads_right_everywhere_lose_exactly_the_drafts_outside_the_vocabulary():
    """On x_{t+1} = x_t + 1 every head is right; drafting over the even tokens only, a draft can be accepted only
    where its token is even, and the output is plain greedy decoding's all the same."""
    model = counting_model(n_future=3, vocab=32)
    evens = _with_draft_vocab(model, list(range(0, 32, 2)))
    prompt = torch.tensor([[3, 4, 5]])
    expected = generate(model, prompt, 40, temperature=0.0)
    out, full_stats = speculative_generate(model, prompt, 40, temperature=0.0)
    assert torch.equal(out, expected) and full_stats.acceptance_per_position == [1.0, 1.0]
    out, stats = speculative_generate(evens, prompt, 40, temperature=0.0)
    assert torch.equal(out, expected)
    # A step's two drafts are consecutive tokens, so one of them is odd: never both accepted. After the first step
    # (its first draft 7, odd) every step's first draft is even and accepted, its second odd and not.
    first, second = stats.acceptance_per_position
    assert second == 0 and first == 20 / 21 and stats.forwards == 21 > full_stats.forwards == 14


@pytest.mark.parametrize("path", ["chain", "unfused", "tree", "ragged"])
def test_greedy_with_a_draft_vocabulary_equals_plain_greedy(path):
    torch.manual_seed(1)
    model = MTPModel(tiny_model_config(vocab_size=16, n_future=3, n_layer=4, max_seq_len=48)).eval()
    with torch.no_grad():
        model.output.weight.mul_(10)  # confident predictions: no near-ties for float noise to flip
    drafting = _with_draft_vocab(model, [1, 2, 3, 5, 8, 13])
    if path == "ragged":
        prompt, lengths = pad_prompts([[1, 2, 3, 4, 5], [6, 7], [9, 10, 11, 3]])
    else:
        prompt, lengths = torch.tensor([[4, 2, 9, 1, 7]]), None
    expected = generate(model, prompt, 24, temperature=0.0, lengths=lengths)
    tree = DraftTree.parse("(0,), (1,), (0, 0), (1, 0)") if path in ("tree", "ragged") else None
    out, stats = speculative_generate(drafting, prompt, 24, temperature=0.0, lengths=lengths, tree=tree,
                                      fused=path != "unfused")
    assert torch.equal(out, expected)


def test_speculative_sampling_with_a_draft_vocabulary_keeps_the_exact_distribution():
    """Drafts proposed from the narrowed law q (zero outside the vocabulary) still give the model's own sampling
    law: the joint histogram of two sampled tokens against the exact one, computed by enumeration."""
    torch.manual_seed(0)
    vocab = 6
    model = MTPModel(tiny_model_config(vocab_size=vocab, n_future=3, n_layer=4, max_seq_len=16)).eval()
    with torch.no_grad():
        model.output.weight.mul_(4)
    drafting = _with_draft_vocab(model, [0, 2, 3, 5])
    prompt = torch.tensor([[1, 2, 3]])
    out, stats = speculative_generate(drafting, prompt.repeat(6000, 1), 2, temperature=1.0,
                                      generator=torch.Generator().manual_seed(1))
    assert 0 < stats.acceptance_per_position[0] < 1
    with torch.no_grad():
        p1 = probs_from_logits(model(prompt)[0, -1], 1.0, None, None)
        seconds = torch.cat([prompt.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)
        p2 = probs_from_logits(model(seconds)[:, -1], 1.0, None, None)
    observed = torch.bincount(out[:, 0] * vocab + out[:, 1], minlength=vocab * vocab).double()
    assert _chi_square_p_value(observed, (p1[:, None] * p2).flatten().double()) > 1e-3
