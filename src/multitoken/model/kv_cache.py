"""Preallocated key/value cache of one attention layer (`KVCache`; a decode's set of them: `caches.py`).

Decoding writes each new block of positions in place, so the hot loop never grows a tensor with `torch.cat`. The
cache holds no length of its own: the caller says where a block goes, so rolling back rejected positions (for
speculative decoding) costs nothing: the next write at an earlier position simply overwrites them.
"""

from __future__ import annotations

import torch
from torch import nn

from multitoken.model.positions import Positions


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
