"""Llama-style transformer building blocks: RMSNorm, rotary embeddings, attention through SDPA, SwiGLU.

Parameter names follow Meta's Llama / multi-token-prediction release (`attention.wq`, `feed_forward.w1`,
`attention_norm`, ...) so their checkpoints map one to one. Other families' blocks are the same block with
`ModelConfig` switches (litgpt's way, not a class per family): q/k/v biases (Qwen2), per-head q/k norms (Qwen3,
Gemma 3), (1 + w) norm gains, norms after attention and the feed-forward as well (Gemma's sandwich), GeGLU, a query
scale and sliding-window layers. The functions here (`rms_norm`, `ACTIVATIONS`, `rope_frequencies`) are shared with
the fused heads of decoding, which run the same math on stacked weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from multitoken.config import ModelConfig
from multitoken.model.kv_cache import KVCache
from multitoken.model.positions import Positions


def rms_normalize(x: torch.Tensor, eps: float, keep_fp32: bool = False) -> torch.Tensor:
    """x / rms(x) over the last dimension, before any gain. Computed in fp32 (as Llama does) so that bf16
    activations do not lose the mean square's precision; returned in x's dtype, or left in fp32 (keep_fp32) for a
    gain that is applied in fp32 too."""
    x_fp32 = x.float()
    normed = x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + eps)
    return normed if keep_fp32 else normed.type_as(x)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, unit_offset: bool = False) -> torch.Tensor:
    """RMSNorm with gain weight: Llama's (normalized in fp32, cast back, times w) or Gemma's (times 1 + w in fp32,
    then cast): the two differ in bf16 rounding, and each family's weights were trained with its own."""
    if unit_offset:
        return (rms_normalize(x, eps, keep_fp32=True) * (1.0 + weight.float())).type_as(x)
    return rms_normalize(x, eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, unit_offset: bool = False) -> None:
        super().__init__()
        self.eps, self.unit_offset = eps, unit_offset
        # The identity at initialisation either way: a gain of 1, or an offset of 0 from it.
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, self.unit_offset)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"silu": F.silu, "gelu_tanh": gelu_tanh}


def rope_frequencies(config: ModelConfig, local: bool = False) -> torch.Tensor:
    """The rotary angular frequencies (head_dim // 2,), fp32, with the config's scaling applied. local: those of the
    sliding-window layers where the config gives them their own base (unscaled, as Gemma 3's)."""
    hd = config.head_size
    local = local and config.rope_local_theta is not None
    theta = config.rope_local_theta if local else config.rope_theta
    freqs = 1.0 / (theta ** (torch.arange(0, hd // 2, dtype=torch.float32) * 2 / hd))
    scaling = None if local else config.rope_scaling
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


def rope_cache(config: ModelConfig, device: torch.device | str | None = None,
               local: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (max_seq_len, head_dim // 2) (local: the window layers', see rope_frequencies)."""
    freqs = rope_frequencies(config, local).to(device)
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


def window_mask(mask: torch.Tensor | None, where: Positions | None, T: int, L: int, window: int,
                dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """The additive mask of a window layer: `mask` (the block's causal or tree mask over L keys, None for plain
    causal) with every key at least `window` positions before its query removed.

    Keys are compared by slot: a decode's past sits at slot = position, and a draft node's ancestors sit in the
    block, within a few positions of it, so for any window longer than a draft tree is deep slot and position give
    the same answer.
    """
    if where is None or where.is_aligned:
        first = 0 if where is None else where.start  # queries at first..first+T-1, keys at slots 0..L-1
        if first + T <= window:  # nothing to cut: every key is within the window
            return mask
        query = torch.arange(first, first + T, device=device)[:, None]
        key = torch.arange(L, device=device)[None, :]
        allowed = (key <= query) & (key > query - window)
        return torch.zeros((T, L), dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))
    key = torch.arange(L, device=device)[None, None, :]
    too_old = key <= (where.positions - window)[:, :, None]  # (B, T, L)
    return mask.masked_fill(too_old[:, None], float("-inf"))


class Attention(nn.Module):
    """in_dim: the width q, k and v are projected from (d_model; an EAGLE-3 drafter's layer reads 2 x d_model)."""

    def __init__(self, config: ModelConfig, window: int | None = None, in_dim: int | None = None) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_size
        self.window, self.scale = window, config.attention_scale
        in_dim = in_dim or config.d_model
        self.wq = nn.Linear(in_dim, config.n_head * config.head_size, bias=config.qkv_bias)
        self.wk = nn.Linear(in_dim, config.kv_heads * config.head_size, bias=config.qkv_bias)
        self.wv = nn.Linear(in_dim, config.kv_heads * config.head_size, bias=config.qkv_bias)
        self.wo = nn.Linear(config.n_head * config.head_size, config.d_model, bias=False)
        if config.qk_norm:  # one gain per element of a head, shared by all heads
            self.q_norm = RMSNorm(config.head_size, config.norm_eps, config.norm_unit_offset)
            self.k_norm = RMSNorm(config.head_size, config.norm_eps, config.norm_unit_offset)
        self.kv_cache: KVCache | None = None

    def project(self, x: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, H, T, hd) and k, v (B, H_kv, T, hd) of a block x (B, T, in_dim), rotated."""
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_head, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return tuple(t.transpose(1, 2) for t in (q, k, v))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, where: Positions | None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project(x, cos, sin)  # (B, H, T, hd)

        if where is None:  # training / full recompute: plain causal attention over the T positions
            mask, is_causal = None, True
        else:  # decoding: write this block into the cache, attend to what the block's mask allows
            if self.kv_cache is None:
                raise RuntimeError("positions given but no KV cache: decode within `DecodeCaches(model, ...)`")
            k, v, mask = self.kv_cache.update(where, k, v)
            is_causal = False
        if self.window is not None:
            mask = window_mask(mask, where, T, k.shape[2], self.window, q.dtype, q.device)
            is_causal = is_causal and mask is None
        if self.n_kv_head != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """A gated feed-forward: w2(act(w1 x) * w3 x), SwiGLU with silu (Llama), GeGLU with the tanh GELU (Gemma)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.d_model, config.ffn_dim, bias=False)
        self.w2 = nn.Linear(config.ffn_dim, config.d_model, bias=False)
        self.w3 = nn.Linear(config.d_model, config.ffn_dim, bias=False)
        self.act = ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + ffn(norm(x)). With `sandwich_norm` each branch's output is
    normalized too before it joins the residual (Gemma). window: the attention window of a sliding layer."""

    def __init__(self, config: ModelConfig, window: int | None = None) -> None:
        super().__init__()
        norm = lambda: RMSNorm(config.d_model, config.norm_eps, config.norm_unit_offset)  # noqa: E731
        self.attention = Attention(config, window)
        self.feed_forward = FeedForward(config)
        self.attention_norm, self.ffn_norm = norm(), norm()
        if config.sandwich_norm:
            self.post_attention_norm, self.post_ffn_norm = norm(), norm()

    @property
    def window(self) -> int | None:
        return self.attention.window

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                where: Positions | None = None) -> torch.Tensor:
        a = self.attention(self.attention_norm(x), cos, sin, where)
        if hasattr(self, "post_attention_norm"):
            a = self.post_attention_norm(a)
        x = x + a
        f = self.feed_forward(self.ffn_norm(x))
        if hasattr(self, "post_ffn_norm"):
            f = self.post_ffn_norm(f)
        return x + f
