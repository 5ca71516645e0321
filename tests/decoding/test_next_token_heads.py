"""Extra heads that read the next token (`heads_read_next_token`): every decoding path gives them head 1's choice
after each position (the prompt's own token inside a prompt), so a model whose heads are right exactly when they
are given that token drafts perfectly, and output stays plain greedy decoding's."""

from __future__ import annotations

import threading

import pytest
import torch

from multitoken.decoding.generate import generate, pad_prompts
from multitoken.decoding.speculative import speculative_generate
from multitoken.decoding.tree import DraftTree
from multitoken.serve.engine import Engine, Job
from tests.conftest import counting_model

V = 32


def counting(start: int, n: int) -> list[int]:
    return [(start + i) % V for i in range(n)]


PATHS = {  # name: speculative_generate's keyword arguments
    "chain, fused heads": {},
    "chain, the model's own forward": {"fused": False},
    "chain, static steps": {"tree": DraftTree.chain(3)},
    "tree, static steps": {"tree": DraftTree(((0,), (1,), (0, 0), (0, 0, 0)))},
}


@pytest.mark.parametrize("path", PATHS)
def test_heads_given_the_next_token_draft_every_token_right(path):
    """Rows of different prompt lengths (their next tokens read from the prompt up to its last, then head 1's):
    every draft accepted, 4 tokens per forward; the same heads given nothing (projections zero) are never right."""
    prompts = [counting(3, 1), counting(10, 6), counting(20, 3)]
    padded, lengths = pad_prompts(prompts)
    model = counting_model(4, read_next=True)
    out, stats = speculative_generate(model, padded, 24, lengths=lengths, **PATHS[path])
    assert [row.tolist() for row in out] == [counting(p[-1] + 1, 24) for p in prompts]
    assert stats.tau == 4.0 and stats.acceptance_per_position == [1.0, 1.0, 1.0]
    with torch.no_grad():
        for proj in model.next_token_proj:
            proj.weight.zero_()
    out, stats = speculative_generate(model, padded, 24, lengths=lengths, **PATHS[path])
    assert [row.tolist() for row in out] == [counting(p[-1] + 1, 24) for p in prompts]
    assert stats.tau == 1.0


def test_compiled_tree_steps_give_the_heads_the_next_token(quick_compile):
    model = counting_model(3, read_next=True, max_seq_len=64)
    out, stats = speculative_generate(model, torch.tensor([counting(7, 5)]), 30, compile=True,
                                      tree=DraftTree(((0,), (1,), (0, 0))))
    assert out[0].tolist() == counting(12, 30) and stats.tau == 3.0


def test_a_wrong_head_after_the_next_token_stops_the_chain_there():
    model = counting_model(4, wrong_heads=frozenset({3}), read_next=True)
    out, stats = speculative_generate(model, torch.tensor([[0]]), 30)
    assert out[0].tolist() == counting(1, 30)
    assert stats.tau == 2.0 and stats.acceptance_per_position == [1.0, 0.0, 0.0]


def test_sampling_with_heads_that_read_the_next_token_keeps_its_output():
    """Speculative sampling drafts from heads given head 1's likeliest token: on a model this sure of itself every
    draft is still accepted and the text is the sequence."""
    model = counting_model(4, read_next=True)
    gen = torch.Generator().manual_seed(0)
    out, stats = speculative_generate(model, torch.tensor([[4]]), 20, temperature=0.05, generator=gen)
    assert out[0].tolist() == counting(5, 20) and stats.tau == 4.0


def test_the_model_forward_reads_the_texts_next_token_and_head_ones_choice_after_the_last():
    """The all-heads forward against heads called one by one on the next tokens given by hand."""
    torch.manual_seed(0)
    model = counting_model(3, read_next=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        idx = torch.tensor([[1, 5, 9, 2, 7]])
        logits = model(idx, return_all_heads=True)
        z = model.trunk(idx)
        first = model.unembed(model.head(0, z))
        following = torch.tensor([[5, 9, 2, 7, int(first[0, -1].argmax())]])
        for i in range(3):
            x = z if i == 0 else z + following_embedding(model, following) @ model.next_token_proj[i - 1].weight.t()
            block = model.head_block(i)
            cos, sin = model.rope(5, None, block.window)
            assert torch.allclose(logits[:, :, i], model.unembed(block(x, cos, sin, None)), atol=1e-5), i


def following_embedding(model, tokens):
    return model.tok_embeddings.weight[tokens]


def test_the_server_gives_the_heads_the_next_token_after_plain_steps_too():
    """A sampled request in the batch makes every step plain; when it leaves, the greedy row's heads catch up on the
    positions they missed (its prompt and plain tokens, each with the token after it) and then draft every token
    right: every chain step accepts all 3 drafts."""
    model = counting_model(4, read_next=True, max_seq_len=128)
    engine = Engine(model, max_batch_size=2, speculative="on").start()
    try:
        answers: dict[str, list[int]] = {"greedy": [], "sampled": []}
        done = {name: threading.Event() for name in answers}

        def emit_to(name):
            def emit(tokens, reason):
                answers[name].extend(tokens)
                if reason is not None:
                    done[name].set()
            return emit

        engine.submit(Job(counting(2, 4), 5, emit_to("sampled"), temperature=0.05, seed=1))
        engine.submit(Job(counting(9, 3), 40, emit_to("greedy")))
        assert all(event.wait(60) for event in done.values())
        assert answers["greedy"] == counting(12, 40) and engine.error is None
        assert 0 < engine.chain_steps < engine.steps and engine.drafts_accepted == 3 * engine.chain_steps
    finally:
        engine.stop()


def test_plain_greedy_is_unchanged_by_the_heads():
    model = counting_model(4, read_next=True)
    assert generate(model, torch.tensor([[3]]), 10)[0].tolist() == counting(4, 10)
