"""--tree auto: whatever it picks, greedy output stays plain greedy; the empty tree is plain decoding."""

from __future__ import annotations

import pytest
import torch

from multitoken.decoding.auto import DraftSamples, choose_tree, draft_samples
from multitoken.decoding.generate import generate
from multitoken.decoding.speculative import speculative_generate
from tests.conftest import counting_model, sharp_model


def test_auto_choice_never_changes_outputs():
    model = sharp_model(0, 3)
    prompts = torch.randint(0, 16, (3, 6))
    samples = draft_samples(model, prompts, 16, depth=2)
    assert samples.ranks.shape == (3 * (16 - 2), 2) and int(samples.ranks.max()) < 8
    assert samples.copy_right.shape == (3 * (16 - 2), 6) and samples.strong.shape == (3 * (16 - 2),)
    choice = choose_tree(model, samples, 3, 22, compile=False, max_nodes=6, timed_sizes=(2, 6))
    assert len(choice.table) >= 1 and choice.plain_step_us > 0
    fast, stats = speculative_generate(model, prompts, 16, tree=choice.tree)
    assert torch.equal(fast, generate(model, prompts, 16))
    assert stats.tree_nodes == choice.tree.num_nodes


@pytest.mark.parametrize("measured", [1.5, 1.0])
def test_auto_end_to_end_check_picks_only_measured_wins(measured, monkeypatch):
    """Heads that are always right promise tau 3, so candidate trees reach the end-to-end check; that check alone
    decides: a measured 1.5x picks a tree, a measured 1.0x (below the margin) falls back to plain decoding."""
    from multitoken.decoding import auto

    model = counting_model(3)
    monkeypatch.setattr(auto, "_step_time", lambda *args, **kwargs: 100.0)  # every step costs a plain one
    monkeypatch.setattr(auto, "end_to_end_speedup", lambda *args, **kwargs: measured)
    prompts = torch.randint(0, 32, (2, 6))
    samples = draft_samples(model, prompts, 12, depth=2)
    choice = choose_tree(model, samples, 2, 18, compile=False, max_nodes=4, timed_sizes=(2, 4), prompts=prompts,
                         max_new_tokens=12)
    tried = [row for row in choice.table if "measured_speedup" in row]
    assert tried and all(row["expected_speedup"] >= auto.MARGIN for row in tried)
    if measured >= auto.MARGIN:
        assert choice.tree.drafts and choice.tau > 1
    else:
        assert not choice.tree.drafts and choice.tau == 1.0
    fast, _ = speculative_generate(model, prompts, 12, tree=choice.tree)
    assert torch.equal(fast, generate(model, prompts, 12))


def test_auto_stops_timing_sizes_that_cannot_pay(monkeypatch):
    """Each timed size is a compilation on a real model: once a tree's step costs more than the largest tree's tau
    could make up for, larger trees are not timed, and the choice is the one timing every size gives."""
    from multitoken.decoding import auto

    # Ranks of the greedy tokens among heads 2 and 3's guesses: the best tree of 8 nodes accepts 47 drafts on these
    # 26 samples (tau 2.81), and smaller trees less.
    samples = [(0, 0)] * 10 + [(1, 0)] * 5 + [(0, 1)] * 4 + [(2, 0)] * 3 + [(1, 1)] * 2 + [(3, 0), (0, 2)]
    ranks = DraftSamples(torch.tensor(samples))  # no lookup runs: head trees alone
    timed = []

    def step_time(model, batch_size, cache_len, tree, compile):  # a step costs its tokens (a CPU at batch 8)
        nodes = 1 if tree is None else tree.num_nodes
        timed.append(nodes)
        return 100.0 * nodes

    monkeypatch.setattr(auto, "_step_time", step_time)
    model = counting_model(3)
    choice = choose_tree(model, ranks, 2, 18, compile=False, max_nodes=8, timed_sizes=(2, 4, 8))
    assert timed == [1, 2, 4]  # 4 nodes cost 4 plain steps > tau 2.81: the 8-node tree is never timed

    def every_size(model, trees, sizes, plain_us, *args):
        return {s: step_time(model, 0, 0, trees[s][0], False) for s in sizes}

    monkeypatch.setattr(auto, "_time_sizes", every_size)
    exhaustive = choose_tree(model, ranks, 2, 18, compile=False, max_nodes=8, timed_sizes=(2, 4, 8))
    assert timed[3:] == [1, 2, 4, 8]
    assert choice.tree == exhaustive.tree and choice.tau == exhaustive.tau
