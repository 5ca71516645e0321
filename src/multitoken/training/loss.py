"""The multi-token loss and its two exact implementations (paper section 2 and Fig. 2).

Label alignment (docs/design.md): a window `tokens` of T + n_future ids gives inputs tokens[:, :T], and head i
(1-based) at position t predicts tokens[:, t + i], so its targets are tokens[:, i : i + T]. All heads see the same T
positions, and every slice is a view of the one window: no n-fold copies.

Total loss = sum_i w_i * CE_i (w_i = 1 by default, the paper's plain sum). Two strategies give the same gradients:

- `naive`: every head's logits (B, T, V) alive at once, one backward. Peak memory O(n V + d).
- `sequential`: run the trunk, detach z into d, then for each head in turn forward *and* backward (freeing its
  logits before the next head), gradients piling up in d's gradient; finally one trunk backward with it.
  Peak memory O(V + d). The head passes run inside one autograd op (`_HeadLoop`), so the caller still makes a
  single total.backward() call: data-parallel wrappers then reduce gradients once per step.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from multitoken.model import MTPModel
from multitoken.training.chunked_ce import IGNORE_INDEX, chunked_linear_cross_entropy, chunked_loss_sum_and_correct
from multitoken.training.drafter_loss import drafter_eval_sums, drafter_losses, weighted_drafter_loss
from multitoken.training.model_targets import greedy_choices, scored_targets
from multitoken.training.targets import in_vocabulary, split_window

__all__ = ["mtp_loss", "mtp_forward_backward", "mtp_eval_batch", "head_loss", "split_window", "in_vocabulary",
           "draft_vocabulary", "next_tokens"]

Strategy = Literal["sequential", "naive"]
CrossEntropy = Literal["chunked", "plain"]
Targets = Literal["text", "model"]


def draft_vocabulary(model: MTPModel, head: int, scoring: bool = False) -> torch.Tensor | None:
    """The token ids head `head` (0-based) is trained (or, scoring, evaluated) over: the model's draft vocabulary for
    an extra head, None for the whole vocabulary. Training narrows only a frozen unembedding: a learning one must
    see every row's gradient, as the model without a draft vocabulary would."""
    if head == 0 or not model.config.draft_vocab or (not scoring and model.output.weight.requires_grad):
        return None
    return model.draft_ids


def head_loss(model: MTPModel, h: torch.Tensor, targets: torch.Tensor, ce: CrossEntropy = "chunked",
              weight_grad_into: torch.Tensor | None = None, weight_grad_scale: float = 1.0,
              vocab: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of one head's hidden state (B, T, d) against its targets (B, T).

    "chunked" never materializes the (B*T, V) logits (training/chunked_ce.py); "plain" is its reference twin.
    weight_grad_into (chunked only): an fp32 accumulator that receives weight_grad_scale * d loss / d W during this
    forward pass, in place of an unembedding gradient through autograd.
    vocab: token ids of a frozen unembedding to score over (`draft_vocabulary`): the softmax runs over those rows
    alone and targets outside them are not scored.
    """
    if vocab is not None:
        weight = model.output.weight.detach().index_select(0, vocab)
        targets = in_vocabulary(targets, vocab, model.config.vocab_size)
        if ce == "plain":
            logits = F.linear(model.norm(h), weight)
            return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
        return chunked_linear_cross_entropy(model.norm(h).flatten(0, 1), weight, targets.flatten())
    if ce == "chunked":
        weight = model.output.weight if weight_grad_into is None else model.output.weight.detach()
        return chunked_linear_cross_entropy(model.norm(h).flatten(0, 1), weight, targets.flatten(),
                                            weight_grad_into=weight_grad_into, weight_grad_scale=weight_grad_scale)
    if ce != "plain":
        raise ValueError(f"unknown cross-entropy {ce!r}: use 'chunked' or 'plain'")
    logits = model.unembed(h)  # (B, T, V)
    # fp32 log-softmax: under bf16 autocast the logits are bf16, too coarse for a loss over tens of thousands of classes.
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def mtp_loss(model: MTPModel, tokens: torch.Tensor, strategy: Strategy = "sequential",
             head_weights: Sequence[float] | None = None, loss_scale: float = 1.0, ce: CrossEntropy = "chunked",
             eot_id: int | None = None, drafter_steps: int = 0, drafter_weight: float = 1.0,
             targets_from: Targets = "text") -> tuple[torch.Tensor, torch.Tensor]:
    """The multi-token loss of one window batch as (total, per_head): call total.backward() once.

    tokens: (B, T + n_future) token ids. total = loss_scale * sum_i w_i * CE_i (loss_scale is 1 / grad_accum_steps
    under gradient accumulation); per_head holds the unweighted mean cross-entropies (n_future,), head 1 first,
    detached. eot_id: ignore targets that lie in the next document (see `split_window`).

    With strategy "sequential" the heads' forward and backward passes run inside this call, one head at a time, and
    total.backward() then only runs the trunk's backward (see `_HeadLoop`). Either way there is exactly one backward
    call per micro-batch, which is what DDP and FSDP2 need to reduce gradients once.

    drafter_steps > 0 (a model with a drafter): its unrolled chain reads the same trunk forward's features and adds
    loss_scale * drafter_weight * its weighted loss (`drafter_loss.py`); per_head then ends with its steps' losses.
    targets_from "model": the extra heads and the drafter are scored against the frozen model's own choices after the
    text (`model_targets.py`), head 1 against the text.
    """
    n = model.n_future
    weights = [1.0] * n if head_weights is None else list(head_weights)
    if len(weights) != n:
        raise ValueError(f"{len(weights)} head weights for a model with n_future={n}")
    if strategy not in ("naive", "sequential"):
        raise ValueError(f"unknown loss strategy {strategy!r}: use 'sequential' or 'naive'")
    inputs, targets = split_window(tokens, n, eot_id)
    following = next_tokens(tokens, inputs.shape[1])
    trunk_learns = any(p.requires_grad for p in (*model.tok_embeddings.parameters(),
                                                 *model.layers[:-1].parameters()))
    with torch.set_grad_enabled(torch.is_grad_enabled() and trunk_learns):  # a frozen trunk needs no graph
        z, features = model.trunk_features(inputs) if drafter_steps else (model.trunk(inputs), None)
    greedy = greedy_choices(model, z) if targets_from == "model" else None
    targets = scored_targets(targets, greedy)
    if strategy == "naive":
        losses = torch.stack([head_loss(model, model.head(i, z, next_tokens=following), y, ce,
                                        vocab=draft_vocabulary(model, i))
                              for i, y in enumerate(targets)])
        total = loss_scale * sum(w * loss for w, loss in zip(weights, losses))
        losses = losses.detach()
    else:
        params = [p for p in _head_side_params(model) if p.requires_grad]
        total, losses = _HeadLoop.apply(z, (model, targets, following, weights, loss_scale, ce), *params)
    if features is None:
        return total, losses
    steps = drafter_losses(model, features, tokens, drafter_steps, eot_id, greedy)
    total = total + loss_scale * drafter_weight * weighted_drafter_loss(steps)
    return total, torch.cat([losses, steps.detach()])


def mtp_forward_backward(model: MTPModel, tokens: torch.Tensor, strategy: Strategy = "sequential",
                         head_weights: Sequence[float] | None = None, loss_scale: float = 1.0,
                         ce: CrossEntropy = "chunked", eot_id: int | None = None) -> torch.Tensor:
    """Forward and backward of the multi-token loss (`mtp_loss`); gradients are accumulated into .grad.
    Returns the per-head mean cross-entropies (n_future,), unweighted and detached, head 1 first."""
    total, losses = mtp_loss(model, tokens, strategy, head_weights, loss_scale, ce, eot_id)
    total.backward()
    return losses


def next_tokens(tokens: torch.Tensor, T: int) -> torch.Tensor:
    """The token after each of the T input positions of a window (B, T + n_future): what the extra heads of a
    `heads_read_next_token` model read in training (the text's own, document boundaries included: the token is an
    input there, not a target)."""
    return tokens[:, 1:T + 1]


def _head_side_params(model: MTPModel) -> list[torch.nn.Parameter]:
    """Everything after the trunk: every head's layer (with its next-token projection), the shared norm and the
    unembedding."""
    blocks = [model.head_block(i) for i in range(model.n_future)]
    return [p for m in (*blocks, *getattr(model, "next_token_proj", []), model.norm, model.output)
            for p in m.parameters()]


class _HeadLoop(torch.autograd.Function):
    """The paper's memory-efficient head loop (Fig. 2) packaged as one differentiable op on the trunk output z.

    forward: detach z into d; for each head in turn run its forward and its backward (torch.autograd.grad, so only one
    head's logits and activations are alive at a time), summing the gradients of d and of the head-side parameters.
    backward: hand those gradients to autograd, scaled by the incoming gradient (1 for total.backward()).

    Why a Function rather than the paper's literal sequence of .backward() calls: wrapped like this the whole step
    has a single backward, so DDP's reducer and FSDP2's reduce-scatter fire once per step instead of once per head,
    and gradient accumulation (no_sync) works as for any model. The head passes use autograd.grad, which returns
    gradients instead of accumulating them into .grad, so no gradient hook fires before the real backward.
    """

    @staticmethod
    def forward(ctx, z, spec, *params):
        model, targets, following, weights, loss_scale, ce = spec
        weight = model.output.weight
        # With the chunked loss every head adds its unembedding gradient into one fp32 accumulator during its forward,
        # instead of each head holding a (V, d) gradient of its own: a 4-token step then needs no more memory than a
        # next-token one (docs/training-memory.md).
        w_acc = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if ce == "chunked" and weight.requires_grad else None
        d = z.detach().requires_grad_(z.requires_grad)
        # Gradients to collect, by tensor: d (the trunk output's), and each head-side parameter's, except the
        # unembedding's when the accumulator collects it.
        wrt = ([d] if d.requires_grad else []) + [p for p in params if w_acc is None or p is not weight]
        grad_of: dict[torch.Tensor, torch.Tensor | None] = dict.fromkeys([*wrt, *params])
        losses = []
        with torch.enable_grad():
            for i, y in enumerate(targets):
                scale = loss_scale * weights[i]
                loss = head_loss(model, model.head(i, d, next_tokens=following), y, ce, weight_grad_into=w_acc,
                                 weight_grad_scale=scale, vocab=draft_vocabulary(model, i))
                if wrt and loss.requires_grad:  # a frozen head (--freeze base's head 1) only reports its loss
                    grads = list(torch.autograd.grad(scale * loss, wrt, allow_unused=True))
                    for j, t in enumerate(wrt):
                        g, grads[j] = grads[j], None  # hold no head's gradient past its summation
                        if g is not None:  # a head's gradient reaches its own layer, the norm, d and W only
                            grad_of[t] = g if grad_of[t] is None else grad_of[t].add_(g)
                        del g
                losses.append(loss.detach())
                del loss
        if w_acc is not None:
            grad_of[weight] = w_acc.to(weight.dtype)
        total = loss_scale * sum(w * loss for w, loss in zip(weights, losses))
        ctx.grads = (grad_of.get(d), [grad_of[p] for p in params])
        per_head = torch.stack(losses)
        ctx.mark_non_differentiable(per_head)
        return total.detach(), per_head

    @staticmethod
    def backward(ctx, grad_total, _grad_per_head):
        d_grad, param_grads = ctx.grads
        del ctx.grads  # these buffers are ours and used once: scale in place, then let go
        scaled = [None if g is None else g.mul_(grad_total) for g in param_grads]
        return (None if d_grad is None else d_grad.mul_(grad_total), None, *scaled)


@torch.no_grad()
def mtp_eval_batch(model: MTPModel, tokens: torch.Tensor, eot_id: int | None = None, drafter_steps: int = 0,
                   targets_from: Targets = "text") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head summed cross-entropy, count of correct top-1 predictions, count of positions the loss scored and
    count of scored positions over one window batch, each (n_future,).

    The training objective's targets (`split_window`, eot_id masking the ones in the next document), so that
    validation measures what training optimizes. Sums rather than means so that batches of any size combine exactly.
    Heads run one at a time and the loss goes chunk by chunk, as in training, so evaluation never holds even one
    head's full logits. An extra head with a draft vocabulary is scored as it drafts: its loss over the targets in
    that vocabulary (the third count), its top-1 hits over all positions (a target outside it is a miss).
    drafter_steps > 0: the drafter's unrolled steps follow the heads, scored the same way. targets_from: as training
    scores them (`mtp_loss`).
    """
    inputs, targets = split_window(tokens, model.n_future, eot_id)
    following = next_tokens(tokens, inputs.shape[1])
    z, features = model.trunk_features(inputs) if drafter_steps else (model.trunk(inputs), None)
    greedy = greedy_choices(model, z) if targets_from == "model" else None
    targets = scored_targets(targets, greedy)
    sums = []
    for i, y in enumerate(targets):
        h = model.norm(model.head(i, z, next_tokens=following)).flatten(0, 1)
        vocab = draft_vocabulary(model, i, scoring=True)
        if vocab is None:
            loss_sum, correct, scored = chunked_loss_sum_and_correct(h, model.output.weight, y.flatten())
            sums.append((loss_sum, correct, scored, scored))
        else:
            inside = in_vocabulary(y, vocab, model.config.vocab_size).flatten()
            loss_sum, correct, in_vocab = chunked_loss_sum_and_correct(h, model.output.weight.index_select(0, vocab),
                                                                       inside)
            sums.append((loss_sum, correct, in_vocab, (y != IGNORE_INDEX).sum()))
    if features is not None:
        sums += drafter_eval_sums(model, features, tokens, drafter_steps, eot_id, greedy)
    return tuple(torch.stack(column) for column in zip(*sums))
