"""The draft vocabulary: the tokens the extra heads may propose, the ones the training data uses most.

Drafting over a model's whole vocabulary reads its whole unembedding (V x d) once more per step after head 1's
verification, and the drafts that are accepted are nearly all common tokens: head 1 rarely says a rare one, and a
head rarely guesses one right. With the K most frequent tokens only, a draft reads K rows instead of V (FR-Spec's
observation for EAGLE drafts), and heads trained on a frozen unembedding train over those rows alone. The output
cannot change: head 1 verifies over every token.
"""

from __future__ import annotations

import numpy as np
import torch

# Counting goes this many tokens at a time (a memory map is read in pieces, never whole), up to a cap: the most
# frequent tokens of a corpus are settled long before its end.
_CHUNK = 1 << 22
_MAX_COUNTED = 1 << 28


def most_frequent_tokens(tokens, k: int, vocab_size: int) -> tuple[torch.Tensor, float, int]:
    """The k most frequent token ids of a token sequence (an array, tensor or `ShardedTokens`), sorted by id (ties
    go to the lower id), with the share of the counted tokens they cover and how many tokens were counted."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    counted = min(len(tokens), _MAX_COUNTED)
    for start in range(0, counted, _CHUNK):
        piece = tokens[start:min(start + _CHUNK, counted)]
        piece = piece.numpy() if isinstance(piece, torch.Tensor) else np.asarray(piece)
        counts += np.bincount(piece.astype(np.int64), minlength=vocab_size)[:vocab_size]
    top = np.sort(np.argsort(-counts, kind="stable")[:k])
    coverage = float(counts[top].sum() / max(counted, 1))
    return torch.from_numpy(top), coverage, counted
