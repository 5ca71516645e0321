"""The batched all-heads layer equals running each head's TransformerBlock on its own (its slow twin)."""

import pytest
import torch

from multitoken import MTPModel
from multitoken.decoding.fused_heads import FusedHeads
from multitoken.model import DecodeCaches
from multitoken.decoding.speculative import speculative_generate
from tests.conftest import sharp_model, tiny_model_config


@pytest.mark.parametrize("n_kv_head", [None, 2])
@pytest.mark.parametrize("per_row", [False, True])
def test_fused_heads_equal_per_head_blocks(n_kv_head, per_row):
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=3, n_layer=4, n_kv_head=n_kv_head)).eval()
    B, T0, T = 2, 6, 3
    fused = FusedHeads(model, 3)
    z0, z1 = torch.randn(B, T0, 32), torch.randn(B, T, 32)
    with torch.no_grad(), DecodeCaches(model, B, 16, heads="all", fused=3) as caches:
        for z, start in ((z0, 0), (z1, torch.tensor([T0, T0]) if per_row else T0)):
            where = caches.at(start, z.shape[1])
            cos, sin = model.rope(z.shape[1], where)
            expected = torch.stack([model.head(i, z, where) for i in range(3)], dim=2)
            torch.testing.assert_close(fused(z, cos, sin, where, caches.fused), expected, rtol=1e-5, atol=1e-5)


def test_fused_and_reference_decoding_agree():
    model = sharp_model(1, 4)
    prompt = torch.randint(0, 16, (3, 5))
    for k in (1, 3):
        fast, fast_stats = speculative_generate(model, prompt, 30, draft_len=k)
        slow, slow_stats = speculative_generate(model, prompt, 30, draft_len=k, fused=False)
        assert torch.equal(fast, slow) and fast_stats.forwards == slow_stats.forwards
