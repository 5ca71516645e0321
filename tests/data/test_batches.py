"""Training windows depend on (seed, step, micro_step) alone; validation windows are fixed."""

import numpy as np
import pytest
import torch

from multitoken.data.batches import eval_batches, train_batch
from multitoken.errors import DataError

TOKENS = np.arange(1000, dtype=np.uint16)


def test_train_windows_are_contiguous_and_reproducible():
    a = train_batch(TOKENS, 4, 12, seed=1, step=5)
    assert a.shape == (4, 12) and a.dtype == torch.int64
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(4, 11, dtype=torch.int64))  # contiguous slices
    assert torch.equal(a, train_batch(TOKENS, 4, 12, seed=1, step=5))
    assert not torch.equal(a, train_batch(TOKENS, 4, 12, seed=1, step=6))
    assert not torch.equal(a, train_batch(TOKENS, 4, 12, seed=1, step=5, micro_step=1))
    assert not torch.equal(a, train_batch(TOKENS, 4, 12, seed=2, step=5))


def test_eval_windows_cover_the_split_evenly():
    batches = eval_batches(TOKENS, 4, 10, num_batches=3)
    starts = torch.cat(batches)[:, 0]
    assert len(batches) == 3 and starts[0] == 0 and starts[-1] == 990
    assert [b.shape[0] for b in eval_batches(TOKENS[:45], 4, 10, num_batches=5)] == [4]  # only 4 windows fit


def test_too_short_split_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than one window"):
        train_batch(TOKENS[:5], 1, 10, 0, 0)


def test_sequential_order_walks_the_split_in_epochs_and_splits_across_ranks():
    T, n_future = 10, 2
    window = T + n_future
    n_windows = (len(TOKENS) - window) // T + 1
    seen = [train_batch(TOKENS, 4, window, seed=0, step=s, micro_step=m, order="sequential", micro_steps=2, stride=T)
            for s in range(25) for m in range(2)]
    starts = torch.cat(seen)[:, 0].tolist()
    assert starts[:n_windows] == [i * T for i in range(n_windows)]  # front to back, each input token once
    assert starts[n_windows:2 * n_windows] == starts[:n_windows]  # then the next epoch, the same way
    # two ranks of batch 2 read exactly the rows of one process of batch 4
    both = torch.cat([train_batch(TOKENS, 2, window, 0, 3, 1, rank=r, world_size=2, order="sequential",
                                  micro_steps=2, stride=T) for r in range(2)])
    assert torch.equal(both, seen[3 * 2 + 1])
