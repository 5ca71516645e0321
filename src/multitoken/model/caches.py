"""The one owner of a decode's key/value caches (`DecodeCaches`): every block's `KVCache`, allocated once, attached into
the model's layers while decoding. Apart from kv_cache.py, which the layers import, so the model's modules import in
one direction (layers -> kv_cache; mtp -> layers; caches -> mtp)."""

from __future__ import annotations

from typing import Literal

import torch

from multitoken.model.kv_cache import KVCache
from multitoken.model.mtp import MTPModel
from multitoken.model.positions import Positions


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
