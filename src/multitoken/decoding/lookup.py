"""Drafts copied from the context: what followed the last place its final tokens occurred (prompt lookup decoding).

Answers repeat their context: names, numbers and code from the prompt, phrases of their own, and a small model whole
sentences. Where the last n tokens of a row (its prompt, the tokens decoded so far and the next token, already
certain) occurred before, the tokens that followed that occurrence are a draft that costs no weights to make. A
draft tree puts such a copy on its first-choice path where the match is long enough to trust, the heads' guesses
elsewhere (`DraftTree.lookup`); head 1 verifies every node, so greedy output cannot change, and the tree's shape
(what a step costs) stays the same.

The match: the longest n from `max_ngram` down to 1 with an earlier occurrence, the latest one. Where the copy runs
into the present (the occurrence is recent, as in a loop), it continues with the tokens it has just proposed, which
is what a repeating pattern does next. A row without any match proposes its last token repeated.
"""

from __future__ import annotations

import torch

# On SmolLM2-135M-Instruct's answers to held-out chat requests (docs/real-model.md), n from 3 down to 1 accepted more
# than 3 down to 2; copies took over the heads' first choice best from a match of 2 tokens (from 1 they displaced
# more right head guesses than they won; from 3 they left right copies unused).
MAX_NGRAM = 3
STRONG_MATCH = 2


def lookup_drafts(history: torch.Tensor, length: torch.Tensor, num_tokens: int,
                  max_ngram: int = MAX_NGRAM) -> tuple[torch.Tensor, torch.Tensor]:
    """The next num_tokens tokens after each row's context, copied from its latest earlier occurrence (B, num_tokens),
    and how long that match is (B,): 0 where there was none.

    history (B, H): row b's context is history[b, :length[b]]; what lies past it is ignored. length (B,) >= 1.
    """
    B, H = history.shape
    device = history.device
    length = length.clamp(1, H)
    copy_from = length - 1  # where the copy starts: without a match, the last token, repeated
    matched = torch.zeros(B, dtype=torch.long, device=device)
    for n in range(min(max_ngram, H - 1), 0, -1):
        key = history.gather(1, (length[:, None] - n + torch.arange(n, device=device)).clamp_min(0))  # (B, n)
        windows = history.unfold(1, n, 1)  # (B, H - n + 1, n): windows[b, i] = history[b, i:i + n]
        starts = torch.arange(H - n + 1, device=device)
        # An earlier occurrence, followed by at least one token of the context (never the key itself).
        match = (windows == key[:, None, :]).all(-1) & (starts[None, :] + n < length[:, None]) \
            & (length[:, None] > n)
        latest = torch.where(match, starts[None, :], -1).max(1).values
        take = (latest >= 0) & (matched == 0)
        copy_from = torch.where(take, latest + n, copy_from)
        matched = torch.where(take, n, matched)
    # The copy, token by token: where it reaches the row's end, it repeats what it copied `period` tokens earlier.
    period = (length - copy_from).clamp_min(1)
    drafts = []
    for j in range(num_tokens):
        source = copy_from + j
        known = history.gather(1, source.clamp(max=H - 1)[:, None])[:, 0]
        if j == 0:
            drafts.append(known)
            continue
        repeated = torch.stack(drafts, 1).gather(1, (j - period).clamp_min(0)[:, None])[:, 0]
        drafts.append(torch.where(source < length, known, repeated))
    return torch.stack(drafts, 1), matched
