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
from multitoken.model.layers import ACTIVATIONS, apply_rope, rms_norm, window_mask


class FusedHeads(nn.Module):
    """Heads first..first+num_heads-1 (0-based; 0 is the next-token head) as one layer. The weights are stacked copies
    (buffers, not parameters: decoding does not train), taken when this is built. Every switch of the model's block
    (biases, q/k norms, sandwich norms, the activation, the query scale, a window) is honoured here as there."""

    def __init__(self, model: MTPModel, num_heads: int, first: int = 0) -> None:
        super().__init__()
        c = model.config
        self.m, self.n_head, self.n_kv_head, self.head_dim, self.eps = num_heads, c.n_head, c.kv_heads, c.head_size, c.norm_eps
        self.unit_offset, self.act, self.scale = c.norm_unit_offset, ACTIVATIONS[c.activation], c.attention_scale
        blocks = [model.head_block(i) for i in range(first, first + num_heads)]
        self.window = blocks[0].window  # every head is head 1's kind of layer

        def stack(name: str, get) -> None:
            self.register_buffer(name, torch.stack([get(b).detach() for b in blocks]).contiguous(), persistent=False)

        # Weights as (m, in, out) so that x (m, rows, in) @ w gives (m, rows, out); q, k, v and w1, w3 concatenated.
        stack("w_qkv", lambda b: torch.cat([b.attention.wq.weight, b.attention.wk.weight, b.attention.wv.weight]).t())
        stack("w_o", lambda b: b.attention.wo.weight.t())
        stack("w_13", lambda b: torch.cat([b.feed_forward.w1.weight, b.feed_forward.w3.weight]).t())
        stack("w_2", lambda b: b.feed_forward.w2.weight.t())
        stack("attention_norm", lambda b: b.attention_norm.weight[None, :])  # (m, 1, d)
        stack("ffn_norm", lambda b: b.ffn_norm.weight[None, :])
        # Heads that read the next token: each one's projection of its embedding, as (m, d, d) (head 1 reads z alone).
        self.reads_next = c.heads_read_next_token and first + num_heads > 1
        if self.reads_next:
            weight = model.output.weight
            zero = torch.zeros(c.d_model, c.d_model, dtype=weight.dtype, device=weight.device)
            w_next = [zero if i == 0 else model.next_token_proj[i - 1].weight.detach().t()
                      for i in range(first, first + num_heads)]
            self.register_buffer("w_next", torch.stack(w_next).contiguous(), persistent=False)
        self.has_bias, self.has_qk_norm, self.has_sandwich = c.qkv_bias, c.qk_norm, c.sandwich_norm
        if c.qkv_bias:
            stack("b_qkv", lambda b: torch.cat([b.attention.wq.bias, b.attention.wk.bias, b.attention.wv.bias])[None])
        if c.qk_norm:  # (m, 1, 1, 1, hd): broadcast over rows, positions and attention heads
            stack("q_norm", lambda b: b.attention.q_norm.weight[None, None, None])
            stack("k_norm", lambda b: b.attention.k_norm.weight[None, None, None])
        if c.sandwich_norm:
            stack("post_attention_norm", lambda b: b.post_attention_norm.weight[None, :])
            stack("post_ffn_norm", lambda b: b.post_ffn_norm.weight[None, :])

    def norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, weight, self.eps, self.unit_offset)

    def forward(self, z: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, where: Positions,
                cache: KVCache, next_embedded: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, T, d) -> every head's hidden state (B, T, m, d), before the shared final norm. cache: the heads'
        one cache of m * B rows (`DecodeCaches(..., fused=m).fused`); cos, sin: `model.rope(T, where, self.window)`.
        next_embedded (B, T, d): for heads that read the next token, its embedding (`model.embed`) at each position."""
        m, H, Hkv, hd = self.m, self.n_head, self.n_kv_head, self.head_dim
        B, T, d = z.shape
        x = z.reshape(1, B * T, d)
        if self.reads_next:  # (m, B*T, d): each head's own input
            if next_embedded is None:
                raise ValueError("these heads read the token after each position: pass next_embedded")
            x = x + torch.bmm(next_embedded.reshape(1, B * T, d).expand(m, -1, -1), self.w_next)
        a = self.norm(x, self.attention_norm)  # (m, B*T, d): the input is shared, only the gains differ
        qkv = torch.bmm(a, self.w_qkv)
        if self.has_bias:
            qkv = qkv + self.b_qkv
        q, k, v = qkv.split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
        q, k = q.reshape(m, B, T, H, hd), k.reshape(m, B, T, Hkv, hd)
        if self.has_qk_norm:
            q, k = self.norm(q, self.q_norm), self.norm(k, self.k_norm)
        q = apply_rope(q, cos, sin).reshape(m * B, T, H, hd).transpose(1, 2)
        k = apply_rope(k, cos, sin).reshape(m * B, T, Hkv, hd).transpose(1, 2)
        v = v.reshape(m * B, T, Hkv, hd).transpose(1, 2)
        # The cache stacks the heads over the batch (row h * B + b): every row's layout repeats once per head.
        stacked = where.repeat(m, cache.k.shape[0] // m)
        keys, values, mask = cache.update(stacked, k, v)
        if self.window is not None:
            mask = window_mask(mask, stacked, T, keys.shape[2], self.window, q.dtype, q.device)
        if Hkv != H:
            keys, values = keys.repeat_interleave(H // Hkv, dim=1), values.repeat_interleave(H // Hkv, dim=1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)  # (m*B, H, T, hd)
        o = torch.bmm(y.transpose(1, 2).reshape(m, B * T, H * hd), self.w_o)  # (m, B*T, d)
        h = x + (self.norm(o, self.post_attention_norm) if self.has_sandwich else o)
        gate, up = torch.bmm(self.norm(h, self.ffn_norm), self.w_13).chunk(2, dim=-1)
        f = torch.bmm(self.act(gate) * up, self.w_2)
        h = h + (self.norm(f, self.post_ffn_norm) if self.has_sandwich else f)
        return h.view(m, B, T, d).permute(1, 2, 0, 3)
