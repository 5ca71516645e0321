"""Decoding equivalence where a GPU runs it: bf16 weights, compiled static steps (CUDA graphs), the heads' chain,
a tree with copies, the drafter's chain, a ragged batch; greedy speculative output = plain greedy token for token.
Skipped without CUDA. `scripts/gpu_check.py --dry-run` runs the same checks on the CPU in fp32 (the settings come
from MULTITOKEN_CHECK_DEVICE / _DTYPE / _COMPILE), so the GPU run's code cannot rot between GPU sessions."""

import copy
import os

import pytest
import torch

from multitoken.decoding.generate import generate, pad_prompts
from multitoken.decoding.speculative import speculative_generate
from multitoken.decoding.tree import DraftTree
from tests.conftest import counting_drafter_model, sharp_model

DEVICE = os.environ.get("MULTITOKEN_CHECK_DEVICE", "cuda")
DTYPE = getattr(torch, os.environ.get("MULTITOKEN_CHECK_DTYPE", "bfloat16"))
COMPILE = os.environ.get("MULTITOKEN_CHECK_COMPILE", "1") == "1"

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs CUDA")]

TREES = {"chain": None, "tree with copies": DraftTree.parse("(0,), (1,), (0, 0), lookup 3"),
         "drafter chain": DraftTree.chain(3, drafter=True)}


def model_on_device(drafter: bool):
    """A sharp random model with three heads, or a tiny model whose drafter learnt to count (its guesses often right,
    so verification keeps, rejects and partly keeps paths)."""
    model = counting_drafter_model(steps=20) if drafter else sharp_model(seed=3, n_future=3, vocab=64)
    return copy.deepcopy(model).to(device=DEVICE, dtype=DTYPE)


@pytest.mark.parametrize("name", list(TREES))
def test_speculative_equals_plain_greedy(name):
    model = model_on_device(drafter=name == "drafter chain")
    rows = [[5, 9, 5, 9, 5, 9, 5], [1, 2, 3], [7, 7, 7, 7, 7, 7, 7, 7, 7, 7]]  # ragged, and repeats to copy
    prompt, lengths = pad_prompts(rows, DEVICE)
    with torch.no_grad():
        plain = generate(model, prompt, 24, temperature=0.0, lengths=lengths, compile=COMPILE)
        fast, stats = speculative_generate(model, prompt, 24, temperature=0.0, lengths=lengths, tree=TREES[name],
                                           compile=COMPILE)
    assert torch.equal(fast, plain), name
    assert stats.forwards <= 24 * len(rows)
