"""Decoding with the sequential drafter: exactly plain greedy (chains, trees, copies, ragged batches, both loops,
stop tokens, the end of the context), exactly the plain sampling law, and acceptance that follows what it drafts."""

from __future__ import annotations

import pytest
import torch

from multitoken import MTPModel
from multitoken.decoding.generate import generate, pad_prompts
from multitoken.decoding.sampling import probs_from_logits
from multitoken.decoding.speculative import speculative_generate
from multitoken.decoding.tree import DraftTree
from multitoken.errors import ConfigError
from multitoken.training.drafter_loss import drafter_batch
from tests.conftest import counting_drafter_model, tiny_model_config

PROMPTS = [[1, 2, 3, 4, 5], [7, 9, 11], [3, 5, 7, 9, 11, 13, 15, 17, 19], [5, 1, 20], [8]]
TREES = ["drafter chain 1", "drafter chain 3", "drafter chain 5", "drafter (0,), (1,), (0, 0), (0, 1), (1, 0)",
         "drafter (0,), (1,), (2,), (0, 0), (0, 0, 0), lookup 4", "drafter chain 2, lookup 3"]


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("fused", [True, False])
def test_greedy_with_the_drafter_is_plain_greedy(tree, fused):
    """fused=True: the static tree loop; False: the eager chain loop (a tree's depth as a chain), a second path."""
    model = counting_drafter_model()
    prompt, lengths = pad_prompts(PROMPTS)
    expected = generate(model, prompt, 40, lengths=lengths)
    tree = DraftTree.parse(tree)
    if not fused and tree.lookup:
        tree = DraftTree.chain(tree.head_depth, drafter=True)
    out, stats = speculative_generate(model, prompt, 40, lengths=lengths, tree=tree, fused=fused)
    assert torch.equal(out, expected)
    accepted = stats.acceptance_per_position
    assert accepted[0] > 0 and min(accepted) < 1  # drafts kept and drafts refused both occur
    assert stats.tau > 1.5


def test_each_row_of_a_batch_decodes_as_it_would_alone():
    model = counting_drafter_model()
    tree = DraftTree.parse("drafter (0,), (1,), (0, 0), (0, 0, 0)")
    prompt, lengths = pad_prompts(PROMPTS)
    batch, stats = speculative_generate(model, prompt, 30, lengths=lengths, tree=tree)
    alone = [speculative_generate(model, torch.tensor([p]), 30, tree=tree) for p in PROMPTS]
    for row, (out, _) in enumerate(alone):
        assert torch.equal(batch[row], out[0])
    assert stats.accepted_tokens == sum(s.accepted_tokens for _, s in alone)


@pytest.mark.parametrize("fused", [True, False])
def test_to_the_end_of_the_context_and_at_stop_tokens(fused):
    model = counting_drafter_model()
    prompt = torch.tensor([[1, 2, 3]])
    n = model.config.max_seq_len - 3
    tree = DraftTree.chain(4, drafter=True)
    assert torch.equal(speculative_generate(model, prompt, n, tree=tree, fused=fused)[0], generate(model, prompt, n))
    stops = torch.tensor([9])
    prompt, lengths = pad_prompts(PROMPTS)
    expected = generate(model, prompt, 30, lengths=lengths, stop_ids=stops)
    out, _ = speculative_generate(model, prompt, 30, lengths=lengths, tree=tree, fused=fused, stop_ids=stops)
    assert torch.equal(out, expected)


def test_a_draft_vocabulary_and_heads_beside_the_drafter():
    """The drafter over a draft vocabulary; a model with heads and a drafter drafts with either, same output."""
    model = counting_drafter_model(draft_vocab=12)
    prompt, lengths = pad_prompts(PROMPTS)
    expected = generate(model, prompt, 30, lengths=lengths)
    out, stats = speculative_generate(model, prompt, 30, lengths=lengths, tree=DraftTree.chain(3, drafter=True))
    assert torch.equal(out, expected) and stats.tau > 1.2
    both = counting_drafter_model(n_future=3)
    expected = generate(both, prompt, 30, lengths=lengths)
    for tree in (None, DraftTree.chain(2), DraftTree.chain(3, drafter=True)):
        assert torch.equal(speculative_generate(both, prompt, 30, lengths=lengths, tree=tree)[0], expected)


def test_the_drafter_guesses_what_its_training_chain_computes():
    """The guesses decoding uses are the drafter's own: a chain that always copies its first choices is accepted
    exactly where the unrolled training chain (an independent computation of the same module) predicts the text."""
    model = counting_drafter_model()
    prompt = torch.tensor([[4, 6, 8, 10]])
    out, stats = speculative_generate(model, prompt, 12, tree=DraftTree.chain(1, drafter=True))
    text = torch.cat([prompt, out], dim=1)  # every token the model said, in order
    with torch.no_grad():
        _, features = model.trunk_features(text[:, :-2])
        reads, targets = drafter_batch(text[:, :-1], text.shape[1] - 2, 1)
        guess = model.drafter.logits(model.drafter_states(features, reads)[0]).argmax(-1)
    right = (guess == targets[0])[0, prompt.shape[1] - 1:]  # from the last prompt position on
    # Each step drafts one token after the kept ones; the drafts scored here are the first of every step.
    assert stats.accepted_per_position[0] <= int(right.sum())
    assert stats.accepted_per_position[0] > 0


def test_sampling_with_the_drafter_follows_the_exact_plain_distribution():
    """As the heads' test: 2-token continuations, the joint histogram against the plain law by enumeration; and the
    drafter's own law taken as-is is caught (the negative control)."""
    from tests.decoding.test_speculative import _chi_square_p_value

    torch.manual_seed(0)
    vocab = 6
    model = MTPModel(tiny_model_config(vocab_size=vocab, n_future=1, n_layer=4, max_seq_len=16,
                                       drafter="eagle3")).eval()
    with torch.no_grad():
        model.output.weight.mul_(4)
        model.drafter.output.weight.copy_(model.output.weight)  # peaked, and near head 1: drafts often kept
    prompt = torch.tensor([[1, 2, 3]])
    draws = 6000
    out, stats = speculative_generate(model, prompt.repeat(draws, 1), 2, temperature=1.0,
                                      tree=DraftTree.chain(1, drafter=True),
                                      generator=torch.Generator().manual_seed(1))
    assert 0 < stats.acceptance_per_position[0] < 1
    with torch.no_grad():
        p1 = probs_from_logits(model(prompt)[0, -1])
        seconds = torch.cat([prompt.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)
        p2 = probs_from_logits(model(seconds)[:, -1])  # (V, V): row = token 1
        _, features = model.trunk_features(seconds)
        y = model.drafter_states(features[:, :3], [seconds[:, 1:]])[0][:, -1]
        q2 = probs_from_logits(model.drafter.logits(y))  # the drafter's law for token 2 after each token 1
    observed = torch.bincount(out[:, 0] * vocab + out[:, 1], minlength=vocab * vocab).double()
    assert _chi_square_p_value(observed, (p1[:, None] * p2).flatten().double()) > 1e-3
    assert _chi_square_p_value(observed, (p1[:, None] * q2).flatten().double()) < 1e-3


def test_drafter_trees_are_refused_on_models_without_one():
    model = MTPModel(tiny_model_config(n_future=2)).eval()
    with pytest.raises(ConfigError, match="no drafter"):
        speculative_generate(model, torch.tensor([[1, 2]]), 4, tree=DraftTree.chain(2, drafter=True))
    with pytest.raises(ConfigError, match="no paths"):
        DraftTree.parse("drafter lookup 3")
    assert DraftTree.parse("drafter") == DraftTree.chain(3, drafter=True)
    assert DraftTree.parse(str(DraftTree.parse("drafter (0,), (1,), lookup 2"))) == \
        DraftTree(((0,), (1,)), 2, drafter=True)


def test_auto_samples_are_the_drafters_own_guesses_and_it_picks_the_drafter():
    """The ranks `--tree auto` learns from (the drafter's chain fed greedy decoding's tokens, every position at once)
    are those of the guesses decoding gets from the drafter at that position (a cached prefill per prefix), along the
    first-choice path; auto weighs the drafter's trees from them."""
    from multitoken.decoding.auto import choose_source, draft_samples
    from multitoken.decoding.sources import DrafterSource
    from multitoken.model import DecodeCaches

    model = counting_drafter_model()
    prompts = torch.tensor([[2, 4, 6, 8], [3, 4, 5, 6]])
    samples = draft_samples(model, prompts, 10, depth=2, max_rank=8, drafter=True)
    sequence = torch.cat([prompts, generate(model, prompts, 10)], dim=1)
    for j, p in enumerate(range(3, 3 + 6)):  # the samples' positions, in order, both rows each
        source = DrafterSource(model, 2, 8, 32, torch.float32)
        with DecodeCaches(model, 2, source.slots, heads="next", **source.cache_options()) as caches:
            _, guesses = source.prefill(sequence[:, :p + 1], torch.full((2,), p + 1), caches)  # (B, 2, 8)
        for row in range(2):
            ranks = samples.ranks[2 * j + row]
            for d in range(2):
                truth = sequence[row, p + d + 2]
                hit = (guesses[row, d] == truth).nonzero()
                assert int(ranks[d]) == (int(hit[0, 0]) if len(hit) else -1)
                if ranks[d] != 0:
                    break  # deeper guesses follow the first choice, which was not the text here
    # What it picks depends on step times (on a tiny model, eager, plain decoding may well win): its candidates are
    # the drafter's trees, scored from these samples, and whatever it picks decodes exactly.
    choice = choose_source(model, prompts, 10, 2, compile=False)
    drafter_rows = [row for row in choice.table if row["tree"].startswith("drafter")]
    assert drafter_rows and max(row["tau"] for row in drafter_rows) > 2
    out, _ = speculative_generate(model, prompts, 10, tree=choice.tree)
    assert torch.equal(out, sequence[:, 4:])
