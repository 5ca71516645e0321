"""The pieces every decoding loop shares: padding prompts, the prefill, one plain step, and keeping a step's tokens
(stop tokens, finished rows). Plain generation (`generate.py`), the speculative loops and the static decoder build on
them, so none of those imports another for its parts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from multitoken.model import MTPModel, Positions


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
