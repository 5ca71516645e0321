"""KV-cached generation equals full recomputation; sampling is seeded and well-behaved."""

import pytest
import torch

from multitoken import MTPModel
from multitoken.decoding import generate, sample
from multitoken.decoding.generate import pad_prompts
from tests.conftest import tiny_model_config


def _greedy_by_recompute(model, prompt, n):
    seq = prompt
    for _ in range(n):
        nxt = model(seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    return seq


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_future", [1, 3])
def test_kv_cache_greedy_equals_full_recompute(seed, n_future):
    torch.manual_seed(seed)
    model = MTPModel(tiny_model_config(n_future=n_future, max_seq_len=40)).eval()
    # Sharpen the model so greedy choices are not near-ties that float noise could flip.
    with torch.no_grad():
        model.output.weight.mul_(20)
    prompt = torch.randint(0, 64, (2, 5 + seed))
    with torch.no_grad():
        expected = _greedy_by_recompute(model, prompt, 20)
    assert torch.equal(generate(model, prompt, 20), expected[:, prompt.shape[1]:])


def test_ragged_prompts_decode_like_each_row_alone():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=2, max_seq_len=40)).eval()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10]]
    padded, lengths = pad_prompts(prompts)
    batch = generate(model, padded, 12, lengths=lengths)
    for row, ids in enumerate(prompts):
        assert torch.equal(batch[row], generate(model, torch.tensor([ids]), 12)[0])


def test_same_seed_same_sample_and_temperature_zero_ignores_seed():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config()).eval()
    prompt = torch.randint(0, 64, (1, 4))
    run = lambda seed, t: generate(model, prompt, 15, temperature=t,  # noqa: E731
                                   generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1, 1.0), run(1, 1.0))
    assert not torch.equal(run(1, 1.0), run(2, 1.0))
    assert torch.equal(run(1, 0.0), run(2, 0.0))


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample(logits, 1.0, top_k=2, generator=g).tolist()) == {0, 1}
    # Probabilities ~ [.64, .24, .09, .03, .01]: top_p 0.8 keeps the first two, which cover it.
    assert set(sample(logits, 1.0, top_p=0.8, generator=g).tolist()) == {0, 1}
    assert set(sample(logits, 1.0, top_p=0.5, generator=g).tolist()) == {0}
    assert sample(logits[:1], 0.0).item() == 0


def test_context_overflow_is_refused():
    model = MTPModel(tiny_model_config(max_seq_len=16))
    with pytest.raises(ValueError, match="exceeds the context of 16"):
        generate(model, torch.zeros(1, 10, dtype=torch.long), 7)
