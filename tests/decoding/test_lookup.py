"""Drafts copied from the context: the lookup against a plain-Python reference, how copies fill a tree, trees with
copies equal to plain greedy decoding (with and without heads, stop tokens; ragged batches in test_tree.py), and
acceptance where copying is always right."""

from __future__ import annotations

import random

import pytest
import torch

from multitoken import MTPModel
from multitoken.decoding.auto import DraftSamples, accepted_drafts, best_draft_trees, draft_samples
from multitoken.decoding.generate import generate
from multitoken.decoding.lookup import lookup_drafts
from multitoken.decoding.speculative import speculative_generate
from multitoken.decoding.tree import DraftTree, draft_tokens, with_copies
from multitoken.errors import ConfigError
from tests.conftest import counting_model, tiny_model_config


def reference_drafts(context: list[int], num_tokens: int, max_ngram: int = 3) -> list[int]:
    """The latest earlier occurrence of the longest suffix (max_ngram down to 1), then what followed it, read from
    the context grown by the drafts themselves (no occurrence: the last token); and the suffix's length."""
    start, matched = len(context) - 1, 0
    for n in range(max_ngram, 0, -1):
        hits = [i for i in range(len(context) - n) if context[i:i + n] == context[-n:]]
        if len(context) > n and hits:
            start, matched = hits[-1] + n, n
            break
    grown = list(context)
    for j in range(num_tokens):
        grown.append(grown[start + j])
    return grown[len(context):], matched


def test_lookup_matches_the_reference_on_random_ragged_contexts():
    rng = random.Random(0)
    for _ in range(200):
        rows = [[rng.randrange(4) for _ in range(rng.randint(1, 24))] for _ in range(4)]
        history = torch.randint(0, 4, (4, 24))  # past each row's end: junk the lookup must not read
        for b, row in enumerate(rows):
            history[b, :len(row)] = torch.tensor(row)
        got, matched = lookup_drafts(history, torch.tensor([len(r) for r in rows]), 5)
        assert got.tolist() == [reference_drafts(r, 5)[0] for r in rows]
        assert matched.tolist() == [reference_drafts(r, 5)[1] for r in rows]


def test_lookup_prefers_the_longest_latest_match_and_continues_a_loop():
    # "1 2 3" occurred at 0 and "2 3" later at 5: the 3-gram wins, so the copy is 9, 9 (what followed 1 2 3).
    copied, matched = lookup_drafts(torch.tensor([[1, 2, 3, 9, 9, 2, 3, 7, 1, 2, 3]]), torch.tensor([11]), 2)
    assert copied.tolist() == [[9, 9]] and matched.tolist() == [3]
    # a loop of period 2 copied past the present: it goes on repeating
    assert lookup_drafts(torch.tensor([[5, 6, 5, 6, 5]]), torch.tensor([5]), 5)[0].tolist() == [[6, 5, 6, 5, 6]]


def test_tree_text_with_lookup():
    tree = DraftTree.parse("(0,), (1,), (0, 0), lookup 4")
    assert tree.paths == ((0,), (1,), (0, 0)) and tree.lookup == 4 and tree.copy_paths == ((0, 0, 0), (0, 0, 0, 0))
    assert tree.num_nodes == 6 and tree.head_depth == 2 and tree.depth == 4 and not tree.is_chain()
    assert DraftTree.parse(str(tree)) == tree and "lookup to depth 4 (2 nodes added)" in tree.describe()
    assert DraftTree.parse("(0,), (1,), (0, 0), lookup 2").num_nodes == 4  # copies take over existing nodes
    alone = DraftTree.parse("lookup 3")
    assert alone.paths == () and alone.drafts and alone.head_depth == 0 and DraftTree.parse(str(alone)) == alone
    for bad in ("(0,), lookup x", "(0,), lookup -2", "lookup"):
        with pytest.raises(ConfigError):
            DraftTree.parse(bad)
    layout = tree.tensors("cpu")
    assert layout["parent"].tolist() == [0, 0, 0, 1, 3, 4] and layout["depth"].tolist() == [0, 1, 1, 2, 3, 4]
    assert layout["copy"].tolist() == [False, True, False, True, True, True]
    assert layout["copy_only"].tolist() == [False] * 4 + [True] * 2
    assert layout["beside_copy"].tolist() == [False, False, True, False, False, False]
    assert layout["path"][5].tolist() == [0, 1, 3, 4, 5]


def test_copies_take_the_first_choice_path_only_where_the_match_is_strong():
    tree = DraftTree.parse("(0,), (1,), (0, 0), lookup 2")
    layout = tree.tensors("cpu")
    guesses = torch.tensor([[[5, 6, 7], [8, 9, 10]]] * 2)  # heads 2 and 3's top 3, both rows
    tokens = draft_tokens(torch.tensor([1, 1]), guesses, layout)
    assert tokens.tolist() == [[1, 5, 6, 8]] * 2
    copied = torch.tensor([[6, 11], [6, 11]])
    filled = with_copies(tokens, guesses, copied, torch.tensor([True, False]), layout)
    # strong row: the copy on (0,) and (0, 0); (1,) takes head 2's first guess, which the copy displaced
    assert filled.tolist() == [[1, 6, 5, 11], [1, 5, 6, 8]]
    added = DraftTree.parse("(0,), lookup 3")  # nodes past the heads always copy
    filled = with_copies(draft_tokens(torch.tensor([1]), guesses[:1, :1, :2], added.tensors("cpu")), guesses[:1, :1],
                         torch.tensor([[6, 11, 12]]), torch.tensor([False]), added.tensors("cpu"))
    assert filled.tolist() == [[1, 5, 11, 12]]


def test_copying_that_is_always_right_is_always_accepted():
    """On x_{t+1} = x_t + 1 (mod 32), once a cycle and more is in the context every copy is right and its match
    strong: copies alone accept all 4 at every step (tau 5), and in place of heads that are always wrong too."""
    prompt = torch.cat([torch.arange(32), torch.arange(2)])[None]  # the root (2) makes a match of 3
    plain = generate(counting_model(1), prompt, 40)
    fast, stats = speculative_generate(counting_model(1), prompt, 40, tree=DraftTree.parse("lookup 4"))
    assert torch.equal(fast, plain) and stats.tau == 5.0 and stats.acceptance_per_position == [1.0] * 4
    wrong = counting_model(3, wrong_heads=frozenset({2, 3}))
    fast, stats = speculative_generate(wrong, prompt, 40, tree=DraftTree.parse("(0,), (1,), (0, 0), lookup 4"))
    assert torch.equal(fast, plain) and stats.tau == 5.0 and stats.copied_steps == stats.row_steps == 8
    fast, stats = speculative_generate(wrong, prompt, 40, tree=DraftTree.parse("(0,), (1,), (0, 0)"))
    assert torch.equal(fast, plain) and stats.tau == 1.0  # the same heads without copies
    # no cycle in the context yet: copies are wrong until the sequence repeats, and the output is the same
    fast, stats = speculative_generate(counting_model(1), prompt[:, :3], 40, tree=DraftTree.parse("lookup 4"))
    assert torch.equal(fast, generate(counting_model(1), prompt[:, :3], 40)) and 1.0 < stats.tau < 5.0


def test_lookup_stops_at_the_stop_token_like_plain_decoding():
    model = counting_model(1)
    prompt = torch.arange(32)[None]
    stop = torch.tensor([7])
    plain = generate(model, prompt, 20, stop_ids=stop)
    fast, _ = speculative_generate(model, prompt, 20, tree=DraftTree.parse("lookup 4"), stop_ids=stop)
    assert torch.equal(fast, plain) and fast[0].tolist()[:9] == [0, 1, 2, 3, 4, 5, 6, 7, 7]


def test_lookup_alone_needs_no_heads_and_is_greedy_only():
    model = MTPModel(tiny_model_config(n_future=1)).eval()
    prompt = torch.tensor([[3, 4, 3, 4, 3]])
    fast, _ = speculative_generate(model, prompt, 12, tree=DraftTree.parse("lookup 4"))
    assert torch.equal(fast, generate(model, prompt, 12))
    with pytest.raises(ConfigError, match="greedily"):
        speculative_generate(model, prompt, 12, tree=DraftTree.parse("lookup 4"), temperature=0.8)


def test_accepted_drafts_walk_the_tree_as_decoding_fills_it():
    """Five samples, hand-checked: heads right along (0, 0); head 2's second guess right, copies right 3 deep;
    head 2 right and copies right 6 deep but the match weak; nothing right but the first copy; head 2's second guess
    right and the (wrong) copy its first."""
    samples = DraftSamples(ranks=torch.tensor([[0, 0], [1, -1], [0, -1], [-1, -1], [1, -1]]),
                           copy_right=torch.tensor([[False] * 6, [True] * 3 + [False] * 3, [True] * 6,
                                                    [True] + [False] * 5, [False] * 6]),
                           copy_ranks=torch.tensor([[1, -1], [1, 5], [0, 0], [-1, -1], [0, -1]]),
                           strong=torch.tensor([True, True, False, True, True]))
    tree = DraftTree.parse("(0,), (1,), (0, 0)")
    assert accepted_drafts(tree, samples).tolist() == [2, 1, 1, 0, 1]
    # sample 0: the wrong copy takes (0,), head 2's first guess moves to (1,), whose child is not in the tree;
    # sample 4: the copy displaced head 2's first guess, so (1,) holds its second, the right one
    assert accepted_drafts(tree.with_lookup(2), samples).tolist() == [1, 2, 1, 1, 1]
    assert accepted_drafts(tree.with_lookup(4), samples).tolist() == [1, 3, 1, 1, 1]
    trees = best_draft_trees(samples, max_nodes=6)
    assert all(t.num_nodes == n for n, (t, _) in trees.items())
    assert trees[6][1] >= 1 + 7 / 5 and trees[4][1] >= 1 + 6 / 5
    assert best_draft_trees(DraftSamples(samples.ranks), 6).keys() == {1, 2, 3, 4}


def test_draft_samples_see_copies_and_their_matches():
    samples = draft_samples(counting_model(3), torch.arange(32)[None], 10, depth=2)
    assert samples.ranks.tolist() == [[0, 0]] * 8  # heads always right
    # copies of a whole cycle are always right, as far as the decoded text goes; the first match is one token (weak)
    assert samples.copy_right.sum(1).tolist() == [6, 6, 6, 6, 5, 4, 3, 2]
    assert samples.strong.tolist() == [False] + [True] * 7 and samples.copy_ranks.tolist() == [[0, 0]] * 8
