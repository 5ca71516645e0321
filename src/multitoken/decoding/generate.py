"""Plain autoregressive generation with the next-token head and a KV cache (gpt-fast's prefill / decode_one_token).

Only the trunk and head 1 run (an ordinary Llama); self-speculative decoding, which also runs the extra heads, builds on
the same caches.
"""

from __future__ import annotations

import torch

from multitoken.decoding.sampling import sample
from multitoken.model import MTPModel


def prefill(model: MTPModel, prompt: torch.Tensor) -> torch.Tensor:
    """Run the prompt (B, T0) through the model, filling the caches; return the last position's logits (B, V)."""
    return model(prompt, start_pos=0)[:, -1]


def decode_one_token(model: MTPModel, token: torch.Tensor, pos: int) -> torch.Tensor:
    """Feed one token per row (B,) at position pos; return the next logits (B, V)."""
    return model(token[:, None], start_pos=pos)[:, -1]


@torch.no_grad()
def generate(model: MTPModel, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Prompt (B, T0) -> (B, T0 + max_new_tokens). temperature 0 is greedy decoding."""
    B, T0 = prompt.shape
    total = T0 + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(f"prompt ({T0}) + max_new_tokens ({max_new_tokens}) = {total} tokens exceeds the context "
                         f"of {model.config.max_seq_len}")
    out = torch.empty(B, total, dtype=prompt.dtype, device=prompt.device)
    out[:, :T0] = prompt
    if max_new_tokens == 0:
        return out
    model.setup_caches(B, total, extra_heads=False)
    try:
        logits = prefill(model, prompt)
        for pos in range(T0, total):
            token = sample(logits, temperature, top_k, top_p, generator)
            out[:, pos] = token
            if pos + 1 < total:
                logits = decode_one_token(model, token, pos)
    finally:
        model.clear_caches()
    return out
