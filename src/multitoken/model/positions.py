"""Where a block of tokens goes when decoding: one `Positions` type for every decoder.

A decoding forward feeds a block of T tokens per row. Each token has a cache slot (where its key and value are
written), a position in the text (its rotary angle) and a set of slots it may attend to. Plain and chain decoding
are the simple case slot == position, each token attending to every slot up to its own; in a draft tree, nodes take
consecutive slots but siblings share a position (their depth), and a node attends to the past and its ancestors.

The fast paths are properties of one object, not types (gpt-fast passes one `input_pos` tensor the same way):
- `start` is a host int when every row's block sits at start..start+T-1: the cache writes a slice and attends to
  the keys up to the block's end, and a single token needs no mask at all (aligned plain decoding, the prefill);
- otherwise `slots`, `positions` (B, T) and an additive `mask` (B, 1, T, L) over all L cache slots say everything.
  Their shapes never change from step to step, so a compiled step built on them is captured once.

`rows` (B,), when given, says which rows of the caches the block's B rows are: a server's batch runs only its live
requests, and prefills a newcomer without touching the rows that are mid-answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(eq=False)
class Positions:
    length: int  # T: tokens per row in the block
    start: int | None = None  # aligned blocks: the shared first position (slots = positions = start + 0..T-1)
    slots: torch.Tensor | None = None  # (B, T) cache slot of each token; None when aligned
    positions: torch.Tensor | None = None  # (B, T) position in the text (rotary); None when aligned
    mask: torch.Tensor | None = None  # (B, 1, T, L) additive mask over the cache slots, 0 = attend, -inf = not
    rows: torch.Tensor | None = None  # (B,) the cache rows of the block's rows; None: all of them, in order

    @classmethod
    def aligned(cls, start: int, length: int) -> Positions:
        """Every row's block at start..start+length-1 (a host int: the cheapest form)."""
        return cls(length, start=start)

    @classmethod
    def per_row(cls, start: torch.Tensor, length: int, cache_len: int, dtype: torch.dtype,
                rows: torch.Tensor | None = None) -> Positions:
        """Row b's block at start[b]..start[b]+length-1, each token attending to every slot up to its own (in cache
        row rows[b] when rows is given)."""
        slots = start[:, None] + torch.arange(length, device=start.device)  # (B, T)
        keys = torch.arange(cache_len, device=start.device)
        allowed = keys[None, None, :] <= slots[:, :, None]  # (B, T, L)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=start.device).masked_fill(~allowed, float("-inf"))
        return cls(length, slots=slots, positions=slots, mask=mask[:, None], rows=rows)

    @property
    def is_aligned(self) -> bool:
        return self.start is not None

    def rope(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's rows of the rotary tables (max_seq_len, hd/2): (T, hd/2) aligned, else (B, T, hd/2)."""
        if self.is_aligned:
            end = self.start + self.length
            if end > cos.shape[0]:
                raise ValueError(f"sequence of {end} positions exceeds max_seq_len={cos.shape[0]}")
            return cos[self.start:end], sin[self.start:end]
        # Static decoding may run draft nodes past the context (they are never kept: the caller stops at it);
        # clamping keeps their table lookups in range without a data-dependent check (which would sync the device).
        positions = self.positions.clamp_max(cos.shape[0] - 1)
        return cos[positions], sin[positions]

    def repeat(self, times: int, cache_rows: int) -> Positions:
        """The same layout for a batch stacked `times` over (the fused heads' cache holds heads x rows: row h * cache_rows
        + b is head h's row b)."""
        if self.is_aligned:
            return self
        rows = None if self.rows is None else \
            (torch.arange(times, device=self.rows.device)[:, None] * cache_rows + self.rows).reshape(-1)
        return Positions(self.length, slots=self.slots.repeat(times, 1), positions=self.positions.repeat(times, 1),
                         mask=self.mask.repeat(times, 1, 1, 1), rows=rows)
