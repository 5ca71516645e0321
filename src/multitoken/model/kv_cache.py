"""Preallocated key/value caches: one attention layer's (`KVCache`), and the one owner of a decode's (`DecodeCaches`).

Decoding writes each new block of positions in place, so the hot loop never grows a tensor with `torch.cat`. The
cache holds no length of its own: the caller says where a block goes, so rolling back rejected positions (for
speculative decoding) costs nothing: the next write at an earlier position simply overwrites them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from multitoken.model.positions import Positions

if TYPE_CHECKING:
    from multitoken.model.mtp import MTPModel


class KVCache(nn.Module):
    def __init__(self, batch_size: int, n_kv_head: int, max_seq_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str | None = None) -> None:
        super().__init__()
        shape = (batch_size, n_kv_head, max_seq_len, head_dim)
        # Not persistent: caches are scratch space and must never end up in a checkpoint.
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def max_seq_len(self) -> int:
        return self.k.shape[2]

    def update(self, where: Positions, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Write k, v (B, H, T, hd) for a block and return (keys, values, mask) to attend to.

        Aligned blocks write a slice and attend to the keys up to the block's end (a single query needs no mask);
        any other block writes its slots and attends to every slot under its mask, so that the shapes stay the same
        from step to step.
        """
        if where.is_aligned:
            T, end = k.shape[2], where.start + k.shape[2]
            if end > self.max_seq_len:
                raise ValueError(f"KV cache holds {self.max_seq_len} positions, asked to write up to {end}")
            self.k[:, :, where.start:end] = k
            self.v[:, :, where.start:end] = v
            # Additive mask (0 = attend, -inf = not): SDPA on CPU runs about twice as fast with it as with a bool one.
            mask = None if T == 1 else torch.full((T, end), float("-inf"), dtype=k.dtype, device=k.device).triu(
                where.start + 1)
            return self.k[:, :, :end], self.v[:, :, :end], mask
        # Indexed assignment (index_put_), not scatter_: torch.compile writes it in place, where a scatter_ becomes a
        # copy of the whole cache per step.
        rows = torch.arange(where.slots.shape[0], device=k.device) if where.rows is None else where.rows
        self.k[rows[:, None], :, where.slots] = k.transpose(1, 2)
        self.v[rows[:, None], :, where.slots] = v.transpose(1, 2)
        if where.rows is None:
            return self.k, self.v, where.mask
        return self.k[where.rows], self.v[where.rows], where.mask  # only these rows' keys (a gathered copy)

    def move(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Copy the entries at slots source (B, P) to slots target (B, P): an accepted tree path, gathered into the
        consecutive slots where the next block expects the past. Gathered first, so overlapping slots are safe."""
        rows = torch.arange(source.shape[0], device=source.device)[:, None]
        self.k[rows, :, target] = self.k[rows, :, source]
        self.v[rows, :, target] = self.v[rows, :, source]


class DecodeCaches:
    """Every KV cache of one decode: allocated once, attached into the model's layers while decoding, cleared after.

    `heads` says which of the model's own blocks decode with a cache: "all" (trunk and every head, run one by one),
    "next" (trunk and head 1: plain decoding) or "none" (the trunk only). `fused` adds one cache for that many heads
    run as one batched layer (`decoding/fused_heads.py`), rows stacked head-major (head h, row b at h * B + b), which
    the fused layer borrows as `self.fused`; `drafter_slots`, one of that length for the model's drafter (its chain
    runs past the last block). A cache may hold more slots than the context (scratch room for draft nodes past its
    end); positions stay within the context. Use as a context manager, or attach() / detach().
    """

    def __init__(self, model: MTPModel, batch_size: int, length: int | None = None,
                 heads: Literal["all", "next", "none"] = "all", fused: int = 0,
                 dtype: torch.dtype | None = None, drafter_slots: int = 0) -> None:
        c = model.config
        self.model, self.batch_size = model, batch_size
        self.length = length or c.max_seq_len
        self.dtype = dtype or model.output.weight.dtype
        device = model.output.weight.device
        blocks = {"all": [*model.layers, *model.extra_heads], "next": list(model.layers),
                  "none": list(model.layers[:-1])}[heads]

        def cache(rows: int) -> KVCache:
            return KVCache(rows, c.kv_heads, self.length, c.head_size, self.dtype, device)

        self.by_block = [(block, cache(batch_size)) for block in blocks]
        self.fused = cache(fused * batch_size) if fused else None
        # The drafter's own cache: written by its passes over kept positions and its chained guesses, never moved
        # (it sees no draft tree: only the path that was kept).
        self.drafter = KVCache(batch_size, c.kv_heads, drafter_slots, c.head_size, self.dtype, device) \
            if drafter_slots else None

    def attach(self) -> DecodeCaches:
        for block, cache in self.by_block:
            block.attention.kv_cache = cache
        if self.drafter is not None:
            self.model.drafter.attention.kv_cache = self.drafter
        return self

    def detach(self) -> None:
        for block in [*self.model.layers, *self.model.extra_heads]:
            block.attention.kv_cache = None
        if hasattr(self.model, "drafter"):
            self.model.drafter.attention.kv_cache = None

    def __enter__(self) -> DecodeCaches:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def at(self, start: int | torch.Tensor, length: int, rows: torch.Tensor | None = None) -> Positions:
        """Where a block of `length` tokens per row goes that starts at start: a host int shared by all rows, or one
        start per row (B,). rows: the cache rows the block's rows are (a subset of the batch; per-row starts only)."""
        if isinstance(start, int) and rows is None:
            return Positions.aligned(start, length)
        if isinstance(start, int):
            start = torch.full((len(rows),), start, dtype=torch.long, device=rows.device)
        return Positions.per_row(start, length, self.length, self.dtype, rows)

    def move(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Move the entries at slots source to target (B, P) in the model blocks' caches (see `KVCache.move`)."""
        for _, cache in self.by_block:
            cache.move(source, target)
