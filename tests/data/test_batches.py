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
