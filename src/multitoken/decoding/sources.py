"""Where a draft tree's guesses come from: one interface, one object per kind of draft source.

A static decoder (`static.py`) verifies a tree per step and then asks its source for the next tree's guesses:
(B, D, R) token ids, the top R guesses at each depth 1..D after the last kept token. Copies from the context
(`lookup.py`) are filled in afterwards over either source's guesses. A source says what the verifying forward must
keep for it (the trunk's output alone, or the drafter's features too) and which caches it writes; the decoder owns
those caches.

- `HeadSource`: the parallel heads 2..D+1, fused into one batched layer (`fused_heads.py`). All D guesses come from
  the trunk's output at the last kept position, in one pass: a guess at depth 2 does not know the one at depth 1.
- `DrafterSource`: the model's sequential drafter (`model/drafter.py`, EAGLE-3's layout). One pass over the kept
  path writes its cache and gives the depth-1 guesses; each further depth is one more drafter step that reads the
  first-choice guess before it and the drafter's own state. A path of ranks (r_1, .., r_j) then means rank r_j of
  the guesses that follow the first choices above it, which is exact for first-choice paths and a fair guess for
  the others (verification decides either way).
"""

from __future__ import annotations

import torch

from multitoken.decoding.fused_heads import FusedHeads
from multitoken.model import DecodeCaches, MTPModel, Positions, prompt_next_tokens


def _last(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return x[torch.arange(x.shape[0], device=x.device), lengths - 1]


class HeadSource:
    """Guesses of the extra heads 2..depth+1, each its top `count` tokens."""

    reads_features = False

    def __init__(self, model: MTPModel, depth: int, count: int) -> None:
        self.model, self.depth, self.count = model, depth, count
        self.heads = FusedHeads(model, depth, first=1)

    def cache_options(self) -> dict:
        return {"fused": self.depth}

    def prefill(self, prompt: torch.Tensor, lengths: torch.Tensor,
                caches: DecodeCaches) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill the caches with the right-padded prompts: head 1's logits (B, V) and the guesses (B, D, R) after
        each row's last prompt token."""
        model = self.model
        where = Positions.aligned(0, prompt.shape[1])
        z = model.trunk(prompt, where)
        first = model.unembed(_last(model.head(0, z, where), lengths))  # (B, V)
        cos, sin = model.rope(prompt.shape[1], where, self.heads.window)
        following = None
        if self.heads.reads_next:  # the prompt's own next tokens, and after its last token head 1's choice
            following = model.embed(model.follow_tokens(prompt_next_tokens(prompt, lengths), first[:, None]))
        extra = self.heads(z, cos, sin, where, caches.fused, following)
        return first, model.unembed_drafts(_last(extra, lengths)).topk(self.count, dim=-1).indices

    def propose(self, z_path: torch.Tensor, features_path: torch.Tensor | None, following: torch.Tensor,
                n_accepted: torch.Tensor, chain: Positions, caches: DecodeCaches) -> torch.Tensor:
        """The next guesses (B, D, R) from a kept path: z_path (B, P, d) the trunk's output along it (past its
        accepted depth: junk the next block overwrites), following (B, P) head 1's token after each of its positions,
        n_accepted (B,) the index of the last kept one, chain where the path goes. The heads must see every kept
        position (their caches) and draft from the last one."""
        model = self.model
        rows = torch.arange(z_path.shape[0], device=z_path.device)
        cos, sin = model.rope(z_path.shape[1], chain, self.heads.window)
        embedded = model.embed(following) if self.heads.reads_next else None
        hidden = self.heads(z_path, cos, sin, chain, caches.fused, embedded)[rows, n_accepted]  # (B, D, d)
        return model.unembed_drafts(hidden).topk(self.count, dim=-1).indices


class DrafterSource:
    """Guesses of the model's sequential drafter, chained `depth` steps on its first choices."""

    reads_features = True

    def __init__(self, model: MTPModel, depth: int, count: int, slots: int, dtype: torch.dtype) -> None:
        """slots: the verifying caches' length. The drafter's own cache is longer by the chain's depth: a path kept
        to its end is followed by depth - 1 chained steps."""
        self.model, self.depth, self.count, self.dtype = model, depth, count, dtype
        self.slots = slots + depth
        self.token_ids = model.drafter_ids()

    def cache_options(self) -> dict:
        return {"drafter_slots": self.slots}

    def prefill(self, prompt: torch.Tensor, lengths: torch.Tensor,
                caches: DecodeCaches) -> tuple[torch.Tensor, torch.Tensor]:
        """As `HeadSource.prefill`: the drafter reads the prompt's features and next tokens (head 1's choice after
        its last), then chains from each row's last prompt position."""
        model = self.model
        where = Positions.aligned(0, prompt.shape[1])
        z, features = model.trunk_features(prompt, where)
        first = model.unembed(_last(model.head(0, z, where), lengths))
        following = model.follow_tokens(prompt_next_tokens(prompt, lengths), first[:, None])
        return first, self.chain(_last(self.pass_over(features, following, where), lengths), lengths - 1)

    def propose(self, z_path: torch.Tensor, features_path: torch.Tensor | None, following: torch.Tensor,
                n_accepted: torch.Tensor, chain: Positions, caches: DecodeCaches) -> torch.Tensor:
        """As `HeadSource.propose`, from the features along the kept path (B, P, 3d): one drafter pass over it
        (positions past the accepted depth write cache entries that the chain overwrites before anyone reads
        them), then the chain from the last kept position."""
        rows = torch.arange(following.shape[0], device=following.device)
        # The path is a chain: causal over the drafter's own, longer cache (on the same cache rows).
        where = Positions.per_row(chain.positions[:, 0], following.shape[1], self.slots, self.dtype, chain.rows)
        y = self.pass_over(features_path, following, where)
        return self.chain(y[rows, n_accepted], where.positions[rows, n_accepted], chain.rows)

    def chain(self, y: torch.Tensor, last: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Guesses (B, D, R) from the drafter's state y (B, d) at each row's last kept position last (B,): depth j's
        step sits at position last + j - 1 and reads depth j - 1's first choice and state."""
        pick = lambda logits: (self.token_ids[logits.topk(self.count, dim=-1).indices], None)  # noqa: E731
        return self.walk(y, last, pick, rows)[0]

    def walk(self, y: torch.Tensor, last: torch.Tensor, pick,
             rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The chain from y at positions last (B,), each depth's tokens chosen by pick(draft logits (B, Vd)) ->
        (token ids (B, R), their distribution (B, V) or None); the next step reads the first of them. Returns the
        tokens (B, D, R) and the distributions (B, D, V) (None when pick gives none). rows: the cache rows of the
        batch's rows (a server's live requests; None: all, in order)."""
        model, drafter = self.model, self.model.drafter
        guesses, dists = [], []
        for j in range(self.depth):
            ids, q = pick(drafter.logits(y))
            guesses.append(ids)
            dists.append(q)
            if j + 1 < self.depth:
                where = Positions.per_row(last + j + 1, 1, self.slots, self.dtype, rows)
                y = drafter(model.tok_embeddings(ids[:, :1]), y[:, None], *model.rope(1, where), where)[:, 0]
        return torch.stack(guesses, dim=1), None if dists[0] is None else torch.stack(dists, dim=1)

    def full_vocabulary(self, logits: torch.Tensor) -> torch.Tensor:
        """Draft logits (..., Vd) as (..., V): -inf outside the draft vocabulary (for sampling's q)."""
        full = logits.new_full((*logits.shape[:-1], self.model.config.vocab_size), float("-inf"))
        return full.index_copy(-1, self.token_ids, logits)

    def pass_over(self, features: torch.Tensor, following: torch.Tensor, where: Positions) -> torch.Tensor:
        """One drafter pass over kept positions: features (B, T, 3d), the token after each (B, T) -> y (B, T, d)."""
        model = self.model
        cos, sin = model.rope(following.shape[1], where)
        return model.drafter(model.tok_embeddings(following), model.drafter.fc(features), cos, sin, where)
