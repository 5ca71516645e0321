"""Draft trees: parsing, the pure acceptance rule, the best-tree search, and tree decoding equal to plain greedy."""

from __future__ import annotations

import pytest
import torch

from multitoken import MTPModel
from multitoken.decoding.generate import generate, pad_prompts
from multitoken.decoding.speculative import speculative_generate, verify_chain
from multitoken.decoding.tree import DraftTree, accept_greedy, best_trees, draft_tokens
from multitoken.errors import ConfigError
from tests.conftest import sharp_model, tiny_model_config

WIDE = DraftTree.parse("(0,), (1,), (2,), (0, 0), (1, 0), (0, 1), (0, 0, 0)")


def test_parse_chain_and_errors():
    assert DraftTree.parse("[[0], [0, 0]]") == DraftTree.chain(2)
    assert DraftTree.chain(3).is_chain() and not WIDE.is_chain()
    assert WIDE.num_nodes == 8 and WIDE.depth == 3 and WIDE.max_rank == 3
    for bad in ("(0, 0), (0,)", "(0,), (0,)", "(-1,)", "nonsense("):
        with pytest.raises(ConfigError):
            DraftTree.parse(bad)


def test_accept_greedy_picks_the_deepest_path_that_greedy_would_produce():
    layout = WIDE.tensors("cpu")
    # nodes: 0 root, 1 (0,), 2 (1,), 3 (2,), 4 (0,0), 5 (1,0), 6 (0,1), 7 (0,0,0)
    tokens = torch.tensor([[10, 11, 12, 13, 20, 21, 22, 30]])
    target = torch.zeros_like(tokens)
    target[0, 0] = 12  # greedy after the root: node 2's token
    target[0, 2] = 21  # greedy after node 2: node 5's token (child of node 2)
    target[0, 5] = 99  # nothing below node 5
    best = accept_greedy(tokens, target, layout)
    assert best.tolist() == [5] and layout["depth"][best].tolist() == [2]
    assert layout["path"][best].tolist() == [[0, 2, 5, 5]]
    target[0, 0] = 77  # no draft right: the root alone
    assert accept_greedy(tokens, target, layout).tolist() == [0]


def test_draft_tokens_take_each_nodes_rank():
    layout = WIDE.tensors("cpu")
    logits = torch.zeros(1, 3, 10)
    for d in range(3):
        logits[0, d, :3] = torch.tensor([3.0, 2.0, 1.0]) + d  # head d+2: ranks 0, 1, 2 are tokens 0, 1, 2
    tokens = draft_tokens(torch.tensor([9]), logits.topk(WIDE.max_rank, dim=-1).indices, layout)
    assert tokens.tolist() == [[9, 0, 1, 2, 0, 0, 1, 0]]


def test_verify_chain_greedy_is_pure():
    block = torch.tensor([[5, 6, 7, 9]])
    logits = torch.full((1, 4, 12), -1.0)
    for j, t in enumerate([6, 7, 8, 3]):
        logits[0, j, t] = 1.0
    n_acc, correction = verify_chain(block, logits)
    assert n_acc.tolist() == [2] and correction.tolist() == [8]


def test_best_trees_are_prefix_closed_and_count_acceptance():
    ranks = torch.tensor([[0, 0, 0], [0, 0, -1], [1, 0, 0], [0, 1, 0], [-1, 0, 0]])
    trees = best_trees(ranks, 6)
    assert trees[0][0].paths == () and trees[0][1] == 1.0
    tree, tau = trees[1]
    assert tree.paths == ((0,),) and tau == pytest.approx(1 + 3 / 5)
    for tree, _ in trees:  # parents always come first: DraftTree would refuse otherwise
        DraftTree(tree.paths)
    assert [t for _, t in trees] == sorted(t for _, t in trees)


@pytest.mark.parametrize("seed", range(3))
def test_tree_greedy_equals_plain_greedy_with_ragged_batches(seed):
    model = sharp_model(seed, 4)
    prompts = [[1], [2, 3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13], [5, 5]]
    padded, lengths = pad_prompts(prompts)
    plain = generate(model, padded, 30, lengths=lengths)
    copying = ("(0,), (1,), (0, 0), (0, 0, 0), lookup 2", "(0,), (1,), (2,), (0, 1), lookup 4", "(0,), lookup 6",
               "lookup 3")  # copies from the context on the first-choice path, or alone (tests/decoding/test_lookup.py)
    for tree in (WIDE, DraftTree.chain(2), DraftTree(()), *map(DraftTree.parse, copying)):
        fast, stats = speculative_generate(model, padded, 30, lengths=lengths, tree=tree)
        assert torch.equal(fast, plain), tree
        assert stats.tree_nodes == tree.num_nodes
    # up to the very end of the context: draft nodes past it are never kept
    fast, _ = speculative_generate(model, padded[:1, :1], 47, tree=WIDE)
    assert torch.equal(fast, generate(model, padded[:1, :1], 47))


def test_tree_deeper_than_the_heads_is_refused():
    with pytest.raises(ValueError, match="use 1..1"):
        speculative_generate(MTPModel(tiny_model_config(n_future=2)), torch.tensor([[1, 2]]), 4, tree=WIDE)
