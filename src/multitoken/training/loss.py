"""The multi-token loss and its two exact implementations (paper section 2 and Fig. 2).

Label alignment (docs/design.md): a window `tokens` of T + n_future ids gives inputs tokens[:, :T], and head i
(1-based) at position t predicts tokens[:, t + i], so its targets are tokens[:, i : i + T]. All heads see the same T
positions, and every slice is a view of the one window: no n-fold copies.

Total loss = sum_i w_i * CE_i (w_i = 1 by default, the paper's plain sum). Two strategies give the same gradients:

- `naive`: every head's logits (B, T, V) alive at once, one backward. Peak memory O(n V + d).
- `sequential`: run the trunk, detach z into d, then for each head in turn forward *and* backward (freeing its
  logits before the next head), gradients piling up in d.grad; finally one trunk backward z.backward(d.grad).
  Peak memory O(V + d).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from multitoken.model import MTPModel
from multitoken.training.chunked_ce import chunked_linear_cross_entropy, chunked_loss_sum_and_correct

Strategy = Literal["sequential", "naive"]
CrossEntropy = Literal["chunked", "plain"]


def split_window(tokens: torch.Tensor, n_future: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(B, T + n_future) window -> inputs (B, T) and the targets (B, T) of heads 1..n_future, all views."""
    T = tokens.shape[1] - n_future
    if T < 1:
        raise ValueError(f"a window of {tokens.shape[1]} tokens is too short for n_future={n_future}")
    return tokens[:, :T], [tokens[:, i:i + T] for i in range(1, n_future + 1)]


def head_loss(model: MTPModel, h: torch.Tensor, targets: torch.Tensor, ce: CrossEntropy = "chunked",
              weight_grad_into: torch.Tensor | None = None, weight_grad_scale: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of one head's hidden state (B, T, d) against its targets (B, T).

    "chunked" never materializes the (B*T, V) logits (training/chunked_ce.py); "plain" is its reference twin.
    weight_grad_into (chunked only): an fp32 accumulator that receives weight_grad_scale * d loss / d W during this
    forward pass, in place of an unembedding gradient through autograd.
    """
    if ce == "chunked":
        weight = model.output.weight if weight_grad_into is None else model.output.weight.detach()
        return chunked_linear_cross_entropy(model.norm(h).flatten(0, 1), weight, targets.flatten(),
                                            weight_grad_into=weight_grad_into, weight_grad_scale=weight_grad_scale)
    if ce != "plain":
        raise ValueError(f"unknown cross-entropy {ce!r}: use 'chunked' or 'plain'")
    logits = model.unembed(h)  # (B, T, V)
    # fp32 log-softmax: under bf16 autocast the logits are bf16, too coarse for a loss over tens of thousands of classes.
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def mtp_forward_backward(model: MTPModel, tokens: torch.Tensor, strategy: Strategy = "sequential",
                         head_weights: Sequence[float] | None = None, loss_scale: float = 1.0,
                         ce: CrossEntropy = "chunked") -> torch.Tensor:
    """Forward and backward of the multi-token loss on one window batch; gradients are accumulated into .grad.

    tokens: (B, T + n_future) token ids. The backward pass sees loss_scale * sum_i w_i * CE_i (loss_scale is
    1 / grad_accum_steps under gradient accumulation). ce picks the chunked cross-entropy (default: no head's full
    logits ever alive) or the plain one. Returns the per-head mean cross-entropies (n_future,), unweighted and
    detached, head 1 first.
    """
    n = model.n_future
    weights = [1.0] * n if head_weights is None else list(head_weights)
    if len(weights) != n:
        raise ValueError(f"{len(weights)} head weights for a model with n_future={n}")
    inputs, targets = split_window(tokens, n)
    if strategy == "naive":
        return _naive(model, inputs, targets, weights, loss_scale, ce)
    if strategy == "sequential":
        return _sequential(model, inputs, targets, weights, loss_scale, ce)
    raise ValueError(f"unknown loss strategy {strategy!r}: use 'sequential' or 'naive'")


def _naive(model: MTPModel, inputs: torch.Tensor, targets: list[torch.Tensor], weights: list[float],
           loss_scale: float, ce: CrossEntropy) -> torch.Tensor:
    z = model.trunk(inputs)
    losses = torch.stack([head_loss(model, model.head(i, z), y, ce) for i, y in enumerate(targets)])
    total = sum(w * loss for w, loss in zip(weights, losses))
    (loss_scale * total).backward()
    return losses.detach()


def _sequential(model: MTPModel, inputs: torch.Tensor, targets: list[torch.Tensor], weights: list[float],
                loss_scale: float, ce: CrossEntropy) -> torch.Tensor:
    z = model.trunk(inputs)
    # Cut the graph at the trunk output: each head's backward stops at d and adds into d.grad, so only one head's
    # logits and activations are alive at a time (Fig. 2).
    d = z.detach().requires_grad_(True)
    weight = model.output.weight
    # With the chunked loss, every head adds its unembedding gradient into one fp32 accumulator during its forward,
    # instead of each head holding a (V, d) gradient of its own until its backward (issue 4's memory bar).
    w_grad = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
        if ce == "chunked" and weight.requires_grad else None
    losses = []
    for i, y in enumerate(targets):
        scale = loss_scale * weights[i]
        loss = head_loss(model, model.head(i, d), y, ce, weight_grad_into=w_grad, weight_grad_scale=scale)
        (scale * loss).backward()
        losses.append(loss.detach())
    # One backward through the trunk with the summed gradient of all heads, and the unembedding's accumulated
    # gradient handed to autograd in the same call, so gradient hooks (DDP, FSDP) see one ordinary backward.
    if w_grad is None:
        z.backward(d.grad)
    else:
        torch.autograd.backward([z, weight], [d.grad, w_grad.to(weight.dtype)])
    return torch.stack(losses)


@torch.no_grad()
def mtp_eval_batch(model: MTPModel, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head summed cross-entropy and count of correct top-1 predictions over one window batch, both (n_future,).

    Sums rather than means so that batches of any size combine exactly. Heads run one at a time and the loss goes
    chunk by chunk, as in training, so evaluation never holds even one head's full logits.
    """
    inputs, targets = split_window(tokens, model.n_future)
    z = model.trunk(inputs)
    sums = [chunked_loss_sum_and_correct(model.norm(model.head(i, z)).flatten(0, 1), model.output.weight, y.flatten())
            for i, y in enumerate(targets)]
    return torch.stack([s for s, _ in sums]), torch.stack([c for _, c in sums])
