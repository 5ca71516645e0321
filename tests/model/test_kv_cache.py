"""Decoding with the preallocated KV cache equals full recomputation, for the trunk and for every head."""

import pytest
import torch

from multitoken import MTPModel
from multitoken.model import DecodeCaches
from tests.conftest import tiny_model_config


# Gemma 3's block with a window of 5 on some layers (head 1's and its copies among them), and its own rotary base
GEMMA_LIKE = dict(qk_norm=True, norm_unit_offset=True, sandwich_norm=True, scale_embeddings=True,
                  activation="gelu_tanh", attention_scale=0.3, sliding_window=5, sliding_layers=[0, 2],
                  rope_local_theta=500.0, qkv_bias=True, n_layer=5)  # layers 0, 2 (head 1) windowed, 1 global


@pytest.mark.parametrize("n_future,n_kv_head,switches", [(1, None, {}), (3, None, {}), (2, 2, {}),
                                                          (3, 2, GEMMA_LIKE)])
@pytest.mark.parametrize("per_row", [False, True])
def test_blockwise_cached_logits_equal_full_recompute(n_future, n_kv_head, switches, per_row):
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=n_future, n_kv_head=n_kv_head, **switches)).eval()
    with torch.no_grad():  # gains and biases away from their identity values, so that each one shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5)
    idx = torch.randint(0, 64, (2, 20))
    with torch.no_grad():
        full = model(idx, return_all_heads=True)
        with DecodeCaches(model, batch_size=2, length=20) as caches:
            pieces, pos = [], 0
            for size in (7, 1, 1, 4, 1, 6):  # a prefill, single steps and multi-token blocks
                start = torch.tensor([pos, pos]) if per_row and pos else pos  # per row: the masked path
                pieces.append(model(idx[:, pos:pos + size], return_all_heads=True, where=caches.at(start, size)))
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
        with DecodeCaches(model, 1, 12) as caches:
            model(idx[:, :8], return_all_heads=True, where=caches.at(0, 8))
            model(wrong, return_all_heads=True, where=caches.at(8, 4))  # a rejected draft
            redo = model(idx[:, 8:], return_all_heads=True, where=caches.at(8, 4))
    torch.testing.assert_close(redo, full[:, 8:], rtol=1e-5, atol=1e-5)


def test_cache_is_not_in_the_state_dict_and_overflow_is_refused():
    model = MTPModel(tiny_model_config())
    with DecodeCaches(model, 1, 8) as caches:
        assert not any("cache" in k for k in model.state_dict())
        with pytest.raises(ValueError, match="KV cache holds 8"):
            model(torch.zeros(1, 9, dtype=torch.long), where=caches.at(0, 9))
    with pytest.raises(RuntimeError, match="DecodeCaches"):  # detached on leaving the block
        model(torch.zeros(1, 2, dtype=torch.long), where=caches.at(0, 2))


@pytest.mark.parametrize("switches", [{}, GEMMA_LIKE])
def test_blocks_on_a_subset_of_the_cache_rows_leave_the_others_alone(switches):
    """A server's batch: rows prefilled and decoded on their own (`rows`), in any order and combination, give each
    sequence's own full-recompute logits, and a row that is not in a block keeps its cache exactly."""
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=3, n_kv_head=2, **switches)).eval()
    seqs = torch.randint(0, 64, (3, 14))
    with torch.no_grad():
        full = [model(seqs[i:i + 1], return_all_heads=True)[0] for i in range(3)]
        got = [[], [], []]
        with DecodeCaches(model, batch_size=3, length=16) as caches:
            def run(rows, start, size):
                rows_t = torch.tensor(rows)
                block = torch.stack([seqs[r, start:start + size] for r in rows])
                logits = model(block, return_all_heads=True, where=caches.at(start, size, rows=rows_t))
                for j, r in enumerate(rows):
                    got[r].append(logits[j])
            run([1], 0, 6)  # row 1 alone
            kept = [c.k[1].clone() for _, c in caches.by_block]
            run([2, 0], 0, 6)  # two newcomers, in reverse order
            assert all(torch.equal(c.k[1], before) for (_, c), before in zip(caches.by_block, kept))
            for start in range(6, 14, 2):
                run([0, 1, 2] if start % 4 else [1, 2, 0], start, 2)
    for i in range(3):
        torch.testing.assert_close(torch.cat(got[i]), full[i], rtol=1e-5, atol=1e-5)
