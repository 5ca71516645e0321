"""Plain autoregressive generation with the next-token head and a KV cache (gpt-fast's prefill / decode_one_token).

Only the trunk and head 1 run (an ordinary Llama). Prompts may have different lengths: they come right-padded with
their lengths, and each row decodes at its own positions. Self-speculative decoding (`speculative.py`) is the fast
twin of this function and must produce the same greedy output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from multitoken.decoding.sampling import sample
from multitoken.model import DecodeCaches, MTPModel, Positions


def pad_prompts(prompts: list[list[int]], device: torch.device | str = "cpu",
                pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> right-padded (B, T0) tensor and lengths (B,)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    padded = torch.full((len(prompts), int(lengths.max())), pad_id, dtype=torch.long, device=device)
    for row, ids in enumerate(prompts):
        padded[row, :len(ids)] = torch.tensor(ids, dtype=torch.long, device=device)
    return padded, lengths


def check_fits(model: MTPModel, prompt_len: int, max_new_tokens: int) -> None:
    total = prompt_len + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(f"prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) = {total} tokens exceeds the "
                         f"context of {model.config.max_seq_len}")


def last_positions(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, ...) at each row's last real prompt position -> (B, ...)."""
    return logits[torch.arange(logits.shape[0], device=logits.device), lengths - 1]


def prefill(model: MTPModel, prompt: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run the padded prompts through the model, filling the caches; next-token logits (B, V) after each prompt.

    Pad positions write junk into the caches beyond a row's prompt; decoding overwrites each such slot before any
    query may attend to it. Only each row's last position is unembedded: the prompt's other logits are never used,
    and for a large vocabulary they cost more than the layers (transformers' generate keeps one position too).
    """
    where = Positions.aligned(0, prompt.shape[1])
    z = model.trunk(prompt, where)
    return model.unembed(last_positions(model.head(0, z, where), lengths))


def decode_one_token(model: MTPModel, token: torch.Tensor, where: Positions) -> torch.Tensor:
    """Feed one token per row (B,) where it goes; return the next logits (B, V)."""
    return model(token[:, None], where=where)[:, -1]


# A streaming callback: (the output tokens so far (B, >= N), how many of each row's are final (B,)).
OnTokens = Callable[[torch.Tensor, torch.Tensor], None]


def stop_check_interval(device: torch.device) -> int:
    """How often plain decoding looks for finished rows. On a GPU each look is a host sync that stalls the queue of
    steps, so every 8 steps (decoding up to 7 past the last stop token); on a CPU every operation has finished when
    it returns, so a look costs nothing and a step past the stop would be a whole wasted forward: every step."""
    return 1 if device.type == "cpu" else 8


def stop_hits(tokens: torch.Tensor, stop_ids: torch.Tensor | None) -> torch.Tensor:
    """Which tokens are stop tokens (all False without any)."""
    if stop_ids is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    return torch.isin(tokens, stop_ids)


def keep_block(out: torch.Tensor, n_done: torch.Tensor, active: torch.Tensor, limit: int | torch.Tensor,
               block: torch.Tensor, n_accepted: torch.Tensor,
               stop_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep a speculative step's result: each row's whole block (B, W) written into out (B, >= limit + W) at the row's
    next place (a finished row's at limit, past what is returned; anything past what a row keeps is overwritten by
    its next block), and n_done (B,) advanced by what active rows kept (n_accepted + 1), rows that kept a stop token
    moved to limit: they are finished. Only this step's tokens are looked at. Returns (n_done, where in out each
    row's block went (B, W))."""
    at = torch.where(active, n_done, limit)[:, None] + torch.arange(block.shape[1], device=block.device)
    out.scatter_(1, at, block)
    n_kept = torch.where(active, n_accepted + 1, 0)
    after = n_done + n_kept
    if stop_ids is not None:
        kept = torch.arange(block.shape[1], device=block.device) < n_kept[:, None]
        after = torch.where((stop_hits(block, stop_ids) & kept).any(1), limit, after)
    return after, at


def pad_after_stop(out: torch.Tensor, stop_ids: torch.Tensor | None) -> torch.Tensor:
    """Each row up to and including its first stop token, then that stop token repeated: what a row says after it
    stopped is not decoded (or not kept), so every path returns the same tensor."""
    if stop_ids is None or out.shape[1] == 0:
        return out
    hit = stop_hits(out, stop_ids)
    after = (hit.cumsum(1) - hit.long()) > 0  # strictly after the first stop
    first = out.gather(1, hit.long().argmax(1, keepdim=True)).expand_as(out)
    return torch.where(after, first, out)


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
