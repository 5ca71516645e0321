"""What each head (and each of the drafter's steps) is scored against: the targets of a training window."""

from __future__ import annotations

import torch

from multitoken.training.chunked_ce import IGNORE_INDEX


def split_window(tokens: torch.Tensor, n_future: int,
                 eot_id: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(B, T + n_future) window -> inputs (B, T) and the targets (B, T) of heads 1..n_future, all views.

    eot_id: mask targets that cross a document boundary. The end-of-document token belongs to the document it ends
    (so head 1 still learns to predict it); head i's target at position t lies in the next document when an end
    token occurs among tokens[t : t + i], and is then set to IGNORE_INDEX (docs/data.md).
    """
    T = tokens.shape[1] - n_future
    if T < 1:
        raise ValueError(f"a window of {tokens.shape[1]} tokens is too short for n_future={n_future}")
    targets = [tokens[:, i:i + T] for i in range(1, n_future + 1)]
    if eot_id is not None:
        ends = torch.cumsum(tokens == eot_id, dim=1)  # ends[:, p] = end tokens among tokens[:, :p + 1]
        before = torch.nn.functional.pad(ends, (1, 0))  # before[:, p] = end tokens among tokens[:, :p]
        targets = [y.masked_fill(before[:, i:i + T] != before[:, :T], IGNORE_INDEX) for i, y in
                   enumerate(targets, start=1)]
    return tokens[:, :T], targets


def in_vocabulary(targets: torch.Tensor, vocab: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Targets (any shape) as indices into vocab (sorted token ids); targets outside it become IGNORE_INDEX."""
    index = torch.full((vocab_size,), IGNORE_INDEX, dtype=torch.long, device=targets.device)
    index[vocab] = torch.arange(len(vocab), device=targets.device)
    return torch.where(targets == IGNORE_INDEX, IGNORE_INDEX, index[targets.clamp(min=0)])
