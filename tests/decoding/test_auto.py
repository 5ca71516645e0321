"""--tree auto: whatever it picks, greedy output stays plain greedy; the empty tree is plain decoding."""

from __future__ import annotations

import pytest
import torch

from multitoken.decoding.auto import choose_tree, head_ranks
from multitoken.decoding.generate import generate
from multitoken.decoding.speculative import speculative_generate
from tests.conftest import counting_model, sharp_model


def test_auto_choice_never_changes_outputs():
    model = sharp_model(0, 3)
    prompts = torch.randint(0, 16, (3, 6))
    ranks = head_ranks(model, prompts, 16, depth=2)
    assert ranks.shape == (3 * (16 - 2), 2) and int(ranks.max()) < 8
    choice = choose_tree(model, ranks, 3, 22, compile=False, max_nodes=6, timed_sizes=(2, 6))
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
    ranks = head_ranks(model, prompts, 12, depth=2)
    choice = choose_tree(model, ranks, 2, 18, compile=False, max_nodes=4, timed_sizes=(2, 4), prompts=prompts,
                         max_new_tokens=12)
    tried = [row for row in choice.table if "measured_speedup" in row]
    assert tried and all(row["expected_speedup"] >= auto.MARGIN for row in tried)
    if measured >= auto.MARGIN:
        assert choice.tree.paths and choice.tau > 1
    else:
        assert not choice.tree.paths and choice.tau == 1.0
    fast, _ = speculative_generate(model, prompts, 12, tree=choice.tree)
    assert torch.equal(fast, generate(model, prompts, 12))
