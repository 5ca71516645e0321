"""The drafter's loss: EAGLE-3's chain unrolled on its own states over every position of a window at once.

Step s at position i reads the text's token t_{i+1+s} and (s > 0) its own state from step s - 1, and predicts
t_{i+2+s}: what drafting will ask of it s guesses into a chain started at i (`Eagle3Drafter.unrolled`). Drafting
reads its own guessed tokens in place of the text's, but only a chain whose guesses were right so far can be
accepted, and there the two agree. Targets past the window or across a document end are not scored; the window's
last few positions lose their furthest targets, which costs a window of hundreds of tokens little.

Steps are weighted 0.8^s (EAGLE-3) and averaged; the module's share of a step's loss is `drafter_weight` times that
(DeepSeek-V3 weights its MTP module 0.3). With the base frozen only the drafter learns from it; from scratch the
trunk learns from it too, through the features, as DeepSeek-V3's trunk does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multitoken.model import MTPModel
from multitoken.training.chunked_ce import IGNORE_INDEX, chunked_linear_cross_entropy, chunked_loss_sum_and_correct
from multitoken.training.model_targets import scored_targets
from multitoken.training.targets import in_vocabulary, split_window

STEP_DECAY = 0.8  # EAGLE-3's weight per chained step


def drafter_batch(tokens: torch.Tensor, T: int, steps: int, eot_id: int | None = None,
                  greedy: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per step s: the token ids it reads (B, T) (t_{i+1+s}; 0 past the window) and its targets (B, T) (t_{i+2+s},
    IGNORE_INDEX past the window or in the next document), from a window (B, >= T + 1). greedy (B, T): the frozen
    model's own choice after each position, to score against in place of the text (`model_targets.py`)."""
    padded = F.pad(tokens, (0, steps + 1), value=IGNORE_INDEX)[:, :T + steps + 1]
    _, targets = split_window(padded, steps + 1, eot_id)  # head h's targets: t_{i+h}, masked like the heads'
    reads = [padded[:, 1 + s:1 + s + T].clamp_min(0) for s in range(steps)]
    return reads, scored_targets(targets, greedy)[1:]


def draft_targets(model: MTPModel, targets: torch.Tensor) -> torch.Tensor:
    """Targets as indices into the drafter's outputs (tokens outside a draft vocabulary are not scored)."""
    if not model.config.draft_vocab:
        return targets
    return in_vocabulary(targets, model.draft_ids, model.config.vocab_size)


def drafter_losses(model: MTPModel, features: torch.Tensor, tokens: torch.Tensor, steps: int,
                   eot_id: int | None = None, greedy: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of each unrolled step (steps,), differentiable. features: the base's (B, T, 3d) over the
    window's first T tokens (`MTPModel.trunk_features`); greedy: as `drafter_batch` takes it."""
    reads, targets = drafter_batch(tokens, features.shape[1], steps, eot_id, greedy)
    drafter = model.drafter
    losses = [chunked_linear_cross_entropy(drafter.norm(y).flatten(0, 1), drafter.output.weight,
                                           draft_targets(model, t).flatten())
              for y, t in zip(model.drafter_states(features, reads), targets)]
    return torch.stack(losses)


def weighted_drafter_loss(losses: torch.Tensor) -> torch.Tensor:
    """The steps' losses (steps,) as one: weighted 0.8^s, averaged."""
    weights = STEP_DECAY ** torch.arange(len(losses), device=losses.device, dtype=losses.dtype)
    return (weights * losses).sum() / weights.sum()


@torch.no_grad()
def drafter_eval_sums(model: MTPModel, features: torch.Tensor, tokens: torch.Tensor, steps: int,
                      eot_id: int | None = None, greedy: torch.Tensor | None = None) -> list[tuple[torch.Tensor, ...]]:
    """Per step: (loss sum over targets in its vocabulary, top-1 hits, those targets, all scored targets), as
    `mtp_eval_batch` gives them for a head."""
    reads, targets = drafter_batch(tokens, features.shape[1], steps, eot_id, greedy)
    sums = []
    for y, t in zip(model.drafter_states(features, reads), targets):
        inside = draft_targets(model, t).flatten()
        loss_sum, correct, scored = chunked_loss_sum_and_correct(model.drafter.norm(y).flatten(0, 1),
                                                                 model.drafter.output.weight, inside)
        sums.append((loss_sum, correct, scored, (t != IGNORE_INDEX).sum()))
    return sums
