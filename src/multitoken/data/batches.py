"""Windows of T + n_future tokens from a flat token array: random ones for training, evenly spaced ones for validation.

Training windows are drawn from a generator seeded by (seed, step, micro_step) alone, so the data a step sees does not
depend on what ran before it: a resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import numpy as np
import torch

from multitoken.errors import DataError


def _check_length(tokens: np.ndarray, window: int, split: str) -> None:
    if len(tokens) < window:
        raise DataError(f"the {split} split has {len(tokens)} tokens, fewer than one window of {window} "
                        "(seq_len + n_future): add more text or lower seq_len (or model.max_seq_len)")


def _gather(tokens: np.ndarray, starts: np.ndarray, window: int) -> torch.Tensor:
    rows = np.stack([tokens[s:s + window] for s in starts]).astype(np.int64)
    return torch.from_numpy(rows)


def train_batch(tokens: np.ndarray, batch_size: int, window: int, seed: int, step: int,
                micro_step: int = 0, rank: int = 0, world_size: int = 1, order: str = "random",
                micro_steps: int = 1, stride: int | None = None) -> torch.Tensor:
    """(batch_size, window) random windows for one micro-step, reproducible from (seed, step, micro_step).

    In a data-parallel run the micro-step's global batch holds batch_size * world_size windows and rank r reads rows
    r * batch_size .. (r + 1) * batch_size - 1 of it: ranks see different data, and together exactly the batch a
    single process with batch_size * world_size would see (what makes distributed == single-process testable).

    order "sequential" reads the split front to back instead, in windows that advance by stride tokens (pass the
    context length T, so that each token is head 1's target once per epoch; default window - 1) and wrap around at
    the end: epochs over the data, still a pure function of (step, micro_step), with micro_steps the micro-steps per
    optimizer step.
    """
    _check_length(tokens, window, "train")
    n_global = batch_size * world_size
    if order == "sequential":
        stride = stride or window - 1
        n_windows = (len(tokens) - window) // stride + 1
        first = (step * micro_steps + micro_step) * n_global
        starts = ((first + np.arange(n_global)) % n_windows) * stride
    elif order == "random":
        rng = np.random.default_rng((seed, step, micro_step))
        starts = rng.integers(0, len(tokens) - window + 1, size=n_global)
    else:
        raise ValueError(f"unknown order {order!r}: use 'random' or 'sequential'")
    return _gather(tokens, starts[rank * batch_size:(rank + 1) * batch_size], window)


def eval_batches(tokens: np.ndarray, batch_size: int, window: int, num_batches: int) -> list[torch.Tensor]:
    """Up to num_batches batches of windows spread evenly over the whole split (the same every time)."""
    _check_length(tokens, window, "validation")
    n_windows = min(num_batches * batch_size, len(tokens) // window)
    starts = np.linspace(0, len(tokens) - window, n_windows).astype(np.int64)
    return [_gather(tokens, starts[i:i + batch_size], window) for i in range(0, n_windows, batch_size)]
