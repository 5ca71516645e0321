"""Llama-style transformer building blocks: RMSNorm, rotary embeddings, attention through SDPA, SwiGLU.

Parameter names follow Meta's Llama / multi-token-prediction release (`attention.wq`, `feed_forward.w1`,
`attention_norm`, ...) so their checkpoints map one to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from multitoken.config import ModelConfig
from multitoken.model.kv_cache import KVCache
from multitoken.model.positions import Positions


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last dimension, before any gain. Computed in fp32 (as Llama does) so that bf16
    activations do not lose the mean square's precision; returned in x's dtype."""
    x_fp32 = x.float()
    return (x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_normalize(x, self.eps) * self.weight


def rope_frequencies(config: ModelConfig) -> torch.Tensor:
    """The rotary angular frequencies (head_dim // 2,), fp32, with the config's scaling applied."""
    hd = config.head_size
    freqs = 1.0 / (config.rope_theta ** (torch.arange(0, hd // 2, dtype=torch.float32) * 2 / hd))
    scaling = config.rope_scaling
    if scaling is None:
        return freqs
    factor = float(scaling["factor"])
    if scaling["rope_type"] == "linear":  # positions divided by factor, i.e. every frequency
        return freqs / factor
    # Llama 3.1's rule: wavelengths longer than the original context / low_freq_factor are stretched by factor, those
    # shorter than context / high_freq_factor kept, and the band between interpolated smoothly.
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    context = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / freqs
    smooth = (context / wavelen - low) / (high - low)
    interpolated = (1 - smooth) * freqs / factor + smooth * freqs
    scaled = torch.where(wavelen > context / low, freqs / factor, freqs)
    medium = (wavelen <= context / low) & (wavelen >= context / high)
    return torch.where(medium, interpolated, scaled)


def rope_cache(config: ModelConfig, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (max_seq_len, head_dim // 2)."""
    freqs = rope_frequencies(config).to(device)
    angles = torch.outer(torch.arange(config.max_seq_len, dtype=torch.float32, device=device), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x0, x1), (x2, x3), ...: Meta's interleaved layout, in real arithmetic.

    x: (B, T, H, hd); cos, sin: (T, hd // 2), or (B, T, hd // 2) when rows sit at different positions.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, T, H, hd/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over attention heads
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_size
        self.wq = nn.Linear(config.d_model, config.n_head * config.head_size, bias=False)
        self.wk = nn.Linear(config.d_model, config.kv_heads * config.head_size, bias=False)
        self.wv = nn.Linear(config.d_model, config.kv_heads * config.head_size, bias=False)
        self.wo = nn.Linear(config.n_head * config.head_size, config.d_model, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, where: Positions | None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)

        if where is None:  # training / full recompute: plain causal attention over the T positions
            mask, is_causal = None, True
        else:  # decoding: write this block into the cache, attend to what the block's mask allows
            if self.kv_cache is None:
                raise RuntimeError("positions given but no KV cache: decode within `DecodeCaches(model, ...)`")
            k, v, mask = self.kv_cache.update(where, k, v)
            is_causal = False
        if self.n_kv_head != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.d_model, config.ffn_dim, bias=False)
        self.w2 = nn.Linear(config.ffn_dim, config.d_model, bias=False)
        self.w3 = nn.Linear(config.d_model, config.ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + ffn(norm(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.d_model, config.norm_eps)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                where: Positions | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, where)
        return x + self.feed_forward(self.ffn_norm(x))
