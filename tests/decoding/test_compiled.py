"""Compiled static decoding steps: captured whole, and token for token the eager output."""

from __future__ import annotations

import pytest
import torch

from multitoken.decoding.generate import generate, pad_prompts
from multitoken.decoding.speculative import speculative_generate
from multitoken.decoding.static import decoder_for
from multitoken.decoding.tree import DraftTree
from tests.conftest import sharp_model

pytestmark = pytest.mark.slow  # every test here compiles decoding steps


def test_steps_have_no_graph_breaks():
    model = sharp_model(0, 3)
    for tree in (None, DraftTree.parse("(0,), (1,), (0, 0)"), DraftTree.parse("(0,), (1,), (0, 0), lookup 3"),
                 DraftTree.parse("lookup 3")):
        decoder = decoder_for(model, 2, 48, tree, compile=False)
        pos = torch.tensor([5, 9])
        args = (torch.zeros(2, dtype=torch.long), pos) if tree is None else \
            (torch.zeros(2, tree.num_nodes, dtype=torch.long), pos)
        with decoder.caches, torch.no_grad():
            explanation = torch._dynamo.explain(decoder.step)(*args)
            assert explanation.graph_break_count == 0 and explanation.graph_count == 1
            if tree is None:
                continue
            # What the loop does with a step's result: one graph too, with copies and stop tokens or without.
            accepted, n_accepted, tokens, guesses = decoder.step(*args)
            out, context = decoder.output_buffers(torch.ones(2, 4, dtype=torch.long))
            for stop_ids in (None, torch.tensor([3])):
                keep_args = (torch.tensor([0, 2]), torch.tensor(6), torch.tensor([4, 3]), accepted, n_accepted,
                             tokens, guesses, out, context, stop_ids)
                explanation = torch._dynamo.explain(decoder.keep)(*keep_args)
                assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_compiled_equals_eager(quick_compile):
    model = sharp_model(0, 3)
    padded, lengths = pad_prompts([[1, 2, 3], [4, 5, 6, 7, 8], [9]])
    eager = generate(model, padded, 20, lengths=lengths)
    assert torch.equal(generate(model, padded, 20, lengths=lengths, compile=True), eager)
    fast, stats = speculative_generate(model, padded, 20, lengths=lengths, compile=True,
                                       tree=DraftTree.parse("(0,), (1,), (0, 0)"))
    assert torch.equal(fast, eager) and stats.compile_seconds > 0
    again, stats = speculative_generate(model, padded, 20, lengths=lengths, compile=True,
                                        tree=DraftTree.parse("(0,), (1,), (0, 0)"))
    assert torch.equal(again, eager) and stats.compile_seconds == 0  # compiled once, reused


def test_compiled_copies_equal_eager(quick_compile):
    """A tree step that also copies from the context: another step, compiled apart (without the autotuning, which
    picks kernels and does not change what the step computes)."""
    model = sharp_model(0, 3)
    padded, lengths = pad_prompts([[1, 2, 3], [4, 5, 6, 7, 8], [9]])
    eager = generate(model, padded, 20, lengths=lengths)
    copying, stats = speculative_generate(model, padded, 20, lengths=lengths, compile=True,
                                          tree=DraftTree.parse("(0,), (1,), (0, 0), lookup 2"))
    assert torch.equal(copying, eager) and stats.compile_seconds > 0


def test_the_drafters_tree_step_compiles_whole_and_decodes_exactly(quick_compile):
    """The drafter's pass over the kept path and its chained guesses inside the static tree step: one graph, and the
    compiled decode is plain greedy token for token (drafts kept and refused both)."""
    from tests.conftest import counting_drafter_model

    model = counting_drafter_model()
    tree = DraftTree.parse("drafter (0,), (1,), (0, 0), lookup 2")
    decoder = decoder_for(model, 2, 96, tree, compile=False)
    with decoder.caches, torch.no_grad():
        explanation = torch._dynamo.explain(decoder.step)(torch.zeros(2, tree.num_nodes, dtype=torch.long),
                                                          torch.tensor([5, 9]))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    padded, lengths = pad_prompts([[1, 2, 3], [4, 6, 8, 10, 12], [9]])
    eager = generate(model, padded, 30, lengths=lengths)
    fast, stats = speculative_generate(model, padded, 30, lengths=lengths, compile=True, tree=tree)
    assert torch.equal(fast, eager) and stats.compile_seconds > 0 and 0 < min(stats.acceptance_per_position) < 1
