"""Targets from the model itself: what a frozen model would say next, in place of what the text says.

Drafts are right when they guess the tokens the verifying model will choose, not the ones a corpus author wrote. A
distilled corpus (`multitoken distill`) makes the two the same by having the model write the text, at the price of
decoding it (tens of tokens a second on a laptop CPU). Here any text will do: one forward of the frozen model over a
window gives, at every position, its greedy choice after the text so far (head 1's argmax), and an extra head or a
drafter step that guesses k tokens ahead of position i is scored against the model's choice after the text up to
i + k - 1. That is exactly what verification checks: a chain whose earlier guesses were right has the text's tokens
as its prefix (SpecForge trains EAGLE-3 drafts "online" on the target model's outputs for the same reason).

The targets are only meaningful while the model that gives them stays as it is, so they need `--freeze base`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multitoken.model import MTPModel
from multitoken.training.chunked_ce import IGNORE_INDEX

CHUNK = 1024  # positions unembedded at once: a (CHUNK, V) block of logits, never (B * T, V)


@torch.no_grad()
def greedy_choices(model: MTPModel, z: torch.Tensor) -> torch.Tensor:
    """The model's next token after each position (B, T): head 1's argmax over the trunk output z (B, T, d)."""
    h = model.head(0, z.detach()).flatten(0, 1)
    chosen = torch.empty(h.shape[0], dtype=torch.long, device=z.device)
    for start in range(0, h.shape[0], CHUNK):
        chosen[start:start + CHUNK] = model.unembed(h[start:start + CHUNK]).argmax(-1)
    return chosen.view(z.shape[:2])


def model_targets(greedy: torch.Tensor, text_targets: torch.Tensor, ahead: int) -> torch.Tensor:
    """Targets `ahead` tokens past each position (B, T), the text's t_{i+ahead}, as the model's choices: its greedy
    token after position i + ahead - 1. Not scored where the text's target is not (another document) or where that
    position lies past the window the model read."""
    T = text_targets.shape[1]
    shifted = F.pad(greedy[:, ahead - 1:], (0, ahead - 1), value=IGNORE_INDEX)[:, :T]
    return torch.where(text_targets == IGNORE_INDEX, IGNORE_INDEX, shifted)


def scored_targets(targets: list[torch.Tensor], greedy: torch.Tensor | None) -> list[torch.Tensor]:
    """Targets of heads 1, 2, ... (head h's: h tokens ahead), head 1's the text's and every later one's the model's
    own choices (`model_targets`) where greedy is given; the text's as they are where it is None."""
    if greedy is None:
        return targets
    return [targets[0], *(model_targets(greedy, y, ahead) for ahead, y in enumerate(targets[1:], start=2))]
