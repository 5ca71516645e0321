"""Stopping at end-of-sequence: every decoding path gives the plain greedy tokens up to each row's first stop token
(kept), then that token repeated, and decoding ends early once every row has stopped."""

import pytest
import torch

from multitoken.decoding.generate import generate, pad_prompts
from multitoken.decoding.steps import pad_after_stop
from multitoken.decoding.speculative import speculative_generate
from multitoken.decoding.tree import DraftTree
from tests.conftest import sharp_model


def test_pad_after_stop():
    out = torch.tensor([[5, 2, 7, 2, 9], [1, 1, 1, 1, 1]])
    assert pad_after_stop(out, torch.tensor([2])).tolist() == [[5, 2, 2, 2, 2], [1, 1, 1, 1, 1]]


# The compiled paths run the same loops with compiled steps (the tree mode already goes through the static decoder
# that compile captures), so they are left out here to keep the suite fast.
@pytest.mark.parametrize("mode", ["plain", "chain", "tree"])
def test_every_path_stops_like_plain_greedy(mode):
    model = sharp_model(seed=3, n_future=3)
    prompt = torch.tensor([[1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 10]])
    lengths = torch.tensor([4, 6])
    N = 30
    full = generate(model, prompt, N, temperature=0.0, lengths=lengths)
    # stop on a token both rows produce somewhere in the middle, so that rows stop at different places
    common = [t for t in full[0, 3:].tolist() if t in full[1, 3:].tolist()]
    assert common, "the fixture should make a shared token"
    stop = torch.tensor([common[0]])
    expected = pad_after_stop(full, stop)
    kwargs = dict(temperature=0.0, lengths=lengths, stop_ids=stop)
    if mode == "plain":
        got = generate(model, prompt, N, **kwargs)
    elif mode == "chain":
        got = speculative_generate(model, prompt, N, **kwargs)[0]
    else:
        got = speculative_generate(model, prompt, N, tree=DraftTree.parse("(0,), (1,), (0, 0)"), **kwargs)[0]
    assert torch.equal(got, expected)


def test_speculative_stops_early():
    model = sharp_model(seed=3, n_future=3)
    prompt = torch.tensor([[1, 2, 3, 4]])
    full = generate(model, prompt, 40, temperature=0.0)
    stop = full[0, 2:3]
    _, stats = speculative_generate(model, prompt, 40, temperature=0.0, stop_ids=stop)
    _, unstopped = speculative_generate(model, prompt, 40, temperature=0.0)
    assert stats.forwards < unstopped.forwards


def test_plain_decoding_on_a_cpu_stops_at_the_step_of_the_stop_token():
    """On a CPU looking for finished rows costs nothing, so no forward runs past the last row's stop token (each one
    would be a whole wasted step, which a benchmark would count against plain decoding)."""
    model = sharp_model(seed=3, n_future=3)
    prompt = torch.tensor([[1, 2, 3, 4]])
    full = generate(model, prompt, 40, temperature=0.0)
    stop_at = 5  # out[:, 5] is the stop token: tokens 1..5 come from steps after the prefill
    assert full[0, stop_at].item() not in full[0, :stop_at].tolist(), "the fixture should stop at its first use"
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    got = generate(model, prompt, 40, temperature=0.0, stop_ids=full[0, stop_at:stop_at + 1])
    assert torch.equal(got[0, :stop_at + 1], full[0, :stop_at + 1])
    assert len(forwards) == stop_at  # one step per token after the prefill's (the prefill calls trunk and head)


@pytest.mark.parametrize("mode", ["plain", "chain", "tree"])
def test_on_tokens_streams_the_final_tokens(mode):
    """Every path reports, step by step, a growing prefix of each row's final output."""
    model = sharp_model(seed=3, n_future=3)
    prompt = torch.tensor([[1, 2, 3, 4]])
    seen = []

    def record(out, n_done):
        seen.append(out[0, :int(n_done[0])].tolist())

    kwargs = dict(temperature=0.0, on_tokens=record)
    if mode == "plain":
        final = generate(model, prompt, 20, **kwargs)
    elif mode == "chain":
        final = speculative_generate(model, prompt, 20, **kwargs)[0]
    else:
        final = speculative_generate(model, prompt, 20, tree=DraftTree.parse("(0,), (1,), (0, 0)"), **kwargs)[0]
    final = final[0].tolist()
    assert seen and seen[-1] == final
    assert all(later[:len(earlier)] == earlier and final[:len(earlier)] == earlier
               for earlier, later in zip(seen, seen[1:]))


def test_a_batch_counts_each_rows_steps_as_that_row_alone_would():
    """Statistics count a row only while it decodes: rows that stop at different steps, batched, add up to the same
    steps and accepted tokens as each decoded alone (acceptance does not depend on the batch)."""
    model = sharp_model(seed=3, n_future=3)
    tree = DraftTree.parse("(0,), (1,), (0, 0), lookup 2")
    rows = [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]
    full = generate(model, torch.tensor([rows[1]]), 30, temperature=0.0)
    stop = full[0, 4:5]  # row 2 stops early; row 1 at this token, or at the length limit
    alone = [speculative_generate(model, torch.tensor([r]), 30, tree=tree, stop_ids=stop)[1] for r in rows]
    prompt, lengths = pad_prompts(rows)
    _, batched = speculative_generate(model, prompt, 30, tree=tree, lengths=lengths, stop_ids=stop)
    assert alone[0].row_steps != alone[1].row_steps, "the fixture should stop the rows at different steps"
    assert batched.row_steps == sum(s.row_steps for s in alone)
    assert batched.accepted_tokens == sum(s.accepted_tokens for s in alone)
