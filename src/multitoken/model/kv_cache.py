"""A preallocated key/value cache for one attention layer.

Decoding writes each new block of positions in place, so the hot loop never grows a tensor with `torch.cat`. The
cache holds no length of its own: the caller says where a block starts, so rolling back rejected positions (for
speculative decoding) costs nothing: the next write at an earlier position simply overwrites them.
"""

from __future__ import annotations

import torch
from torch import nn


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

    def update(self, start_pos: int | torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Write k, v (B, H, T, hd) at positions start_pos..start_pos+T-1 and return (keys, values, mask) to attend.

        start_pos is an int (all rows aligned: keys are sliced to the block's end, and a single query needs no mask)
        or a (B,) tensor of per-row starts (ragged batches in speculative decoding: every row's block lands at its
        own position, keys span the whole cache and a (B, 1, T, L) mask lets query i see keys <= start + i).
        """
        T = k.shape[2]
        if isinstance(start_pos, int):
            end = start_pos + T
            if end > self.max_seq_len:
                raise ValueError(f"KV cache holds {self.max_seq_len} positions, asked to write up to {end}")
            self.k[:, :, start_pos:end] = k
            self.v[:, :, start_pos:end] = v
            # Additive mask (0 = attend, -inf = not): SDPA on CPU runs about twice as fast with it as with a bool one.
            mask = None if T == 1 else torch.full((T, end), float("-inf"), dtype=k.dtype, device=k.device).triu(
                start_pos + 1)
            return self.k[:, :, :end], self.v[:, :, :end], mask
        positions = start_pos[:, None] + torch.arange(T, device=k.device)  # (B, T)
        index = positions[:, None, :, None].expand_as(k)  # (B, H, T, hd)
        self.k.scatter_(2, index, k)
        self.v.scatter_(2, index, v)
        keys = torch.arange(self.max_seq_len, device=k.device)
        mask = keys[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, T, L)
        return self.k, self.v, mask
