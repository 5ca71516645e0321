"""The batched all-heads layer equals running each head's TransformerBlock on its own (its slow twin)."""

import pytest
import torch

from multitoken import MTPModel
from multitoken.decoding.fused_heads import FusedHeads
from multitoken.model import DecodeCaches
from multitoken.decoding.speculative import speculative_generate
from tests.conftest import sharp_model, tiny_model_config


# Every block switch at once, head 1's layer windowed (a window of 4, shorter than the 9 positions below)
SWITCHED = dict(qkv_bias=True, qk_norm=True, norm_unit_offset=True, sandwich_norm=True, scale_embeddings=True,
                activation="gelu_tanh", attention_scale=0.3, sliding_window=4, sliding_layers=[1],
                rope_local_theta=500.0)


@pytest.mark.parametrize("n_kv_head,switches", [(None, {}), (2, {}), (2, SWITCHED)])
@pytest.mark.parametrize("per_row", [False, True])
def test_fused_heads_equal_per_head_blocks(n_kv_head, switches, per_row):
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=3, n_layer=4, n_kv_head=n_kv_head, **switches)).eval()
    with torch.no_grad():  # gains and biases away from their identity values, so that each one shows
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5)
    B, T0, T = 2, 6, 3
    fused = FusedHeads(model, 3)
    z0, z1 = torch.randn(B, T0, 32), torch.randn(B, T, 32)
    with torch.no_grad(), DecodeCaches(model, B, 16, heads="all", fused=3) as caches:
        for z, start in ((z0, 0), (z1, torch.tensor([T0, T0]) if per_row else T0)):
            where = caches.at(start, z.shape[1])
            cos, sin = model.rope(z.shape[1], where, fused.window)
            expected = torch.stack([model.head(i, z, where) for i in range(3)], dim=2)
            torch.testing.assert_close(fused(z, cos, sin, where, caches.fused), expected, rtol=1e-5, atol=1e-5)


def test_fused_and_reference_decoding_agree():
    model = sharp_model(1, 4)
    prompt = torch.randint(0, 16, (3, 5))
    for k in (1, 3):
        fast, fast_stats = speculative_generate(model, prompt, 30, draft_len=k)
        slow, slow_stats = speculative_generate(model, prompt, 30, draft_len=k, fused=False)
        assert torch.equal(fast, slow) and fast_stats.forwards == slow_stats.forwards
