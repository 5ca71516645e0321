"""Decoding with the preallocated KV cache equals full recomputation, for the trunk and for every head."""

import pytest
import torch

from multitoken import MTPModel
from tests.conftest import tiny_model_config


@pytest.mark.parametrize("n_future,n_kv_head", [(1, None), (3, None), (2, 2)])
def test_blockwise_cached_logits_equal_full_recompute(n_future, n_kv_head):
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=n_future, n_kv_head=n_kv_head)).eval()
    idx = torch.randint(0, 64, (2, 20))
    with torch.no_grad():
        full = model(idx, return_all_heads=True)
        model.setup_caches(batch_size=2, max_seq_len=20)
        pieces, pos = [], 0
        for size in (7, 1, 1, 4, 1, 6):  # a prefill, single steps and multi-token blocks
            pieces.append(model(idx[:, pos:pos + size], return_all_heads=True, start_pos=pos))
            pos += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_rewriting_positions_rolls_back_the_cache():
    """Speculative decoding rejects positions by simply writing over them: the result must equal a clean run."""
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=2)).eval()
    idx = torch.randint(0, 64, (1, 12))
    wrong = torch.randint(0, 64, (1, 4))
    with torch.no_grad():
        full = model(idx, return_all_heads=True)
        model.setup_caches(1, 12)
        model(idx[:, :8], return_all_heads=True, start_pos=0)
        model(wrong, return_all_heads=True, start_pos=8)  # a rejected draft
        redo = model(idx[:, 8:], return_all_heads=True, start_pos=8)
    torch.testing.assert_close(redo, full[:, 8:], rtol=1e-5, atol=1e-5)


def test_cache_is_not_in_the_state_dict_and_overflow_is_refused():
    model = MTPModel(tiny_model_config())
    model.setup_caches(1, 8)
    assert not any("cache" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="KV cache holds 8"):
        model(torch.zeros(1, 9, dtype=torch.long), start_pos=0)
    model.clear_caches()
    with pytest.raises(RuntimeError, match="setup_caches"):
        model(torch.zeros(1, 2, dtype=torch.long), start_pos=0)
