"""Heads run as one batched layer for decoding.

Every head is a transformer layer reading the same trunk output z. Called one by one, m heads cost m layers' worth
of small kernels per decoding step, which at small batch is launch/dispatch overhead, not arithmetic. Here their
weights are stacked once so that each projection is a single `bmm` over the m heads, their KV caches form one cache
of batch m * B (`DecodeCaches.fused`, which this layer borrows), and attention is one SDPA call. Same math as `TransformerBlock` (the slow twin, tested equal).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch import nn

from multitoken.model import KVCache, MTPModel, Positions
from multitoken.model.layers import apply_rope, rms_normalize


class FusedHeads(nn.Module):
    """Heads first..first+num_heads-1 (0-based; 0 is the next-token head) as one layer. The weights are stacked copies
    (buffers, not parameters: decoding does not train), taken when this is built."""

    def __init__(self, model: MTPModel, num_heads: int, first: int = 0) -> None:
        super().__init__()
        c = model.config
        self.m, self.n_head, self.n_kv_head, self.head_dim, self.eps = num_heads, c.n_head, c.kv_heads, c.head_size, c.norm_eps
        blocks = [model.head_block(i) for i in range(first, first + num_heads)]

        def stack(name: str, get) -> None:
            self.register_buffer(name, torch.stack([get(b).detach() for b in blocks]).contiguous(), persistent=False)

        # Weights as (m, in, out) so that x (m, rows, in) @ w gives (m, rows, out); q, k, v and w1, w3 concatenated.
        stack("w_qkv", lambda b: torch.cat([b.attention.wq.weight, b.attention.wk.weight, b.attention.wv.weight]).t())
        stack("w_o", lambda b: b.attention.wo.weight.t())
        stack("w_13", lambda b: torch.cat([b.feed_forward.w1.weight, b.feed_forward.w3.weight]).t())
        stack("w_2", lambda b: b.feed_forward.w2.weight.t())
        stack("attention_norm", lambda b: b.attention_norm.weight[None, :])  # (m, 1, d)
        stack("ffn_norm", lambda b: b.ffn_norm.weight[None, :])

    def forward(self, z: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, where: Positions,
                cache: KVCache) -> torch.Tensor:
        """z (B, T, d) -> every head's hidden state (B, T, m, d), before the shared final norm. cache: the heads'
        one cache of m * B rows (`DecodeCaches(..., fused=m).fused`)."""
        m, H, Hkv, hd = self.m, self.n_head, self.n_kv_head, self.head_dim
        B, T, d = z.shape
        x = z.reshape(1, B * T, d)
        a = rms_normalize(x, self.eps) * self.attention_norm  # (m, B*T, d): the input is shared, only the gains differ
        q, k, v = torch.bmm(a, self.w_qkv).split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
        q = apply_rope(q.reshape(m, B, T, H, hd), cos, sin).reshape(m * B, T, H, hd).transpose(1, 2)
        k = apply_rope(k.reshape(m, B, T, Hkv, hd), cos, sin).reshape(m * B, T, Hkv, hd).transpose(1, 2)
        v = v.reshape(m * B, T, Hkv, hd).transpose(1, 2)
        # The cache stacks the heads over the batch (row h * B + b): every row's layout repeats once per head.
        keys, values, mask = cache.update(where.repeat(m), k, v)
        if Hkv != H:
            keys, values = keys.repeat_interleave(H // Hkv, dim=1), values.repeat_interleave(H // Hkv, dim=1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (m*B, H, T, hd)
        h = x + torch.bmm(y.transpose(1, 2).reshape(m, B * T, H * hd), self.w_o)  # (m, B*T, d)
        gate, up = torch.bmm(rms_normalize(h, self.eps) * self.ffn_norm, self.w_13).chunk(2, dim=-1)
        h = h + torch.bmm(F.silu(gate) * up, self.w_2)
        return h.view(m, B, T, d).permute(1, 2, 0, 3)
