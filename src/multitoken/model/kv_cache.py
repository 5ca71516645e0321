"""A preallocated key/value cache for one attention layer, and where a decoding block goes in it.

Decoding writes each new block of positions in place, so the hot loop never grows a tensor with `torch.cat`. The
cache holds no length of its own: the caller says where a block goes, so rolling back rejected positions (for
speculative decoding) costs nothing: the next write at an earlier position simply overwrites them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BlockPositions:
    """Where a decoding block of T tokens per row goes: the static-shape form that `torch.compile` captures whole.

    A token's cache slot and its position in the text differ for tree drafts: the nodes of a tree take consecutive
    slots, but siblings share a position (their depth), and each node may attend only to the past and to its own
    ancestors. Plain and chain blocks are the special case slot == position, attending to every slot up to its own.
    """

    slots: torch.Tensor  # (B, T) cache slot each token's key and value are written to
    positions: torch.Tensor  # (B, T) position in the sequence, for rotary embeddings
    mask: torch.Tensor  # (B, 1, T, L) additive attention mask over all L cache slots: 0 = attend, -inf = not

    def repeat(self, times: int) -> BlockPositions:
        """The same layout for a batch stacked `times` over (the fused heads' cache holds heads x rows)."""
        return BlockPositions(self.slots.repeat(times, 1), self.positions.repeat(times, 1),
                              self.mask.repeat(times, 1, 1, 1))


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

    def update(self, start_pos: int | torch.Tensor | BlockPositions, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Write k, v (B, H, T, hd) for a block and return (keys, values, mask) to attend to.

        start_pos is an int (all rows aligned: keys are sliced to the block's end, and a single query needs no mask),
        a (B,) tensor of per-row starts (every row's block lands at its own position, keys span the whole cache and a
        (B, 1, T, L) mask lets query i see keys <= start + i), or a `BlockPositions` (slots and mask given: shapes
        never change from step to step, so a compiled step is captured once).
        """
        T = k.shape[2]
        if isinstance(start_pos, BlockPositions):
            # Indexed assignment (index_put_), not scatter_: torch.compile writes it in place, where a scatter_
            # becomes a copy of the whole cache per step.
            slots = start_pos.slots
            rows = torch.arange(slots.shape[0], device=slots.device)[:, None]
            self.k[rows, :, slots] = k.transpose(1, 2)
            self.v[rows, :, slots] = v.transpose(1, 2)
            return self.k, self.v, start_pos.mask
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

    def move(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Copy the entries at slots source (B, P) to slots target (B, P): an accepted tree path, gathered into the
        consecutive slots where the next block expects the past. Gathered first, so overlapping slots are safe."""
        rows = torch.arange(source.shape[0], device=source.device)[:, None]
        self.k[rows, :, target] = self.k[rows, :, source]
        self.v[rows, :, target] = self.v[rows, :, source]
