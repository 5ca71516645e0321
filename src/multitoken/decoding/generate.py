"""Plain autoregressive generation with the next-token head and a KV cache (gpt-fast's prefill / decode_one_token).

Only the trunk and head 1 run (an ordinary Llama). Prompts may have different lengths: they come right-padded with
their lengths, and each row decodes at its own positions. Self-speculative decoding (`speculative.py`) is the fast
twin of this function and must produce the same greedy output.
"""

from __future__ import annotations

import torch

from multitoken.decoding.sampling import sample
from multitoken.decoding.steps import (OnTokens, check_fits, decode_one_token, pad_after_stop, prefill,
                                       stop_check_interval, stop_hits)
from multitoken.decoding.steps import pad_prompts  # noqa: F401  (generate's partner: callers import both from here)
from multitoken.model import DecodeCaches, MTPModel


@torch.no_grad()
def generate(model: MTPModel, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
             lengths: torch.Tensor | None = None, compile: bool = False,
             stop_ids: torch.Tensor | None = None, on_tokens: OnTokens | None = None,
             cache_len: int | None = None) -> torch.Tensor:
    """New tokens (B, max_new_tokens) after each prompt. temperature 0 is greedy decoding.

    prompt: (B, T0) token ids, right-padded when `lengths` (B,) gives rows of different lengths. compile: run each
    step as a static-shape step compiled by `torch.compile` (`static.py`; the first call of a shape compiles it).
    stop_ids: token ids that end a row (the model's end-of-sequence): decoding ends once every row has produced
    one, and each row's tokens after its first stop token are that token repeated (`pad_after_stop`).
    on_tokens(out, n_done): called after every step with the output so far and the tokens final per row (B,), for
    streaming; each call costs a host sync. cache_len (compiled): the cache length to decode with, at least
    T0 + max_new_tokens; calls with one cache_len (and batch size) share one compiled step whatever their prompt
    lengths (by default it is T0 + max_new_tokens, rounded up).
    """
    B, T0 = prompt.shape
    check_fits(model, T0, max_new_tokens)
    out = torch.empty(B, max_new_tokens, dtype=torch.long, device=prompt.device)
    if max_new_tokens == 0:
        return out
    if lengths is None:
        lengths = torch.full((B,), T0, device=prompt.device)
    if compile:  # static-shape steps, compiled once per shape and kept with the model
        from multitoken.decoding.static import cache_slots, decoder_for

        if cache_len is not None and not T0 + max_new_tokens <= cache_len <= model.config.max_seq_len:
            raise ValueError(f"cache_len {cache_len} must hold the prompt and the new tokens ({T0 + max_new_tokens}) "
                             f"within the context ({model.config.max_seq_len})")
        decoder = decoder_for(model, B, cache_len or cache_slots(model, T0 + max_new_tokens), None, compile=True)
        caches, step = decoder.caches, lambda token, i: decoder.run_step(token, lengths + i)
    else:
        aligned = bool((lengths == T0).all())  # one host check up front: aligned rows use the cheaper shared position
        caches = DecodeCaches(model, B, T0 + max_new_tokens, heads="next")

        def step(token: torch.Tensor, i: int) -> torch.Tensor:
            return decode_one_token(model, token, caches.at(T0 + i if aligned else lengths + i, 1))
    stopped = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    check_every = stop_check_interval(prompt.device)
    with caches:
        logits = prefill(model, prompt, lengths)
        for i in range(max_new_tokens):
            token = sample(logits, temperature, top_k, top_p, generator)
            out[:, i] = token
            if on_tokens is not None:
                on_tokens(out, torch.full((B,), i + 1))
            if stop_ids is not None:
                stopped |= stop_hits(token, stop_ids)
                if i % check_every == check_every - 1 and bool(stopped.all()):
                    break  # every row has stopped: pad_after_stop fills the slots not decoded
            if i + 1 < max_new_tokens:
                logits = step(token, i)
    return pad_after_stop(out, stop_ids)
