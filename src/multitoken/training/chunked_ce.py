"""Linear + cross-entropy over chunks of rows: no (N, V) logits or logit-gradient tensor is ever alive whole.

With vocabularies of 32k-256k tokens, one head's logits and their gradient dominate training memory (the
idea of Liger-Kernel's fused linear cross-entropy, written here in plain PyTorch). For each chunk of rows we compute
the logits, the loss, and at once the gradients: d loss / d logits = softmax - onehot, turned right away into the
chunk's share of d loss / d h (= g @ W) and of d loss / d W (+= g^T @ h, accumulated in fp32). The backward pass
then only scales the saved gradients. Peak extra memory: one chunk's logits (chunk_rows x V, fp32), the (N, d)
gradient of h and the (V, d) fp32 gradient of W, instead of several (N, V) tensors.

The chunk size follows Liger's rule, rows per chunk ~ N / ceil(V / d), so that one chunk's logits are about as large
as the hidden states themselves; but never fewer than 256 rows, below which the chunk matmuls turn tall and skinny
and the loop's per-chunk overhead starts to cost more than the memory is worth.

Its slow twin is `F.cross_entropy(h @ W.T, targets)`; tests hold the two equal on loss and gradients.
"""

from __future__ import annotations

import math

import torch

IGNORE_INDEX = -100


MIN_CHUNK_ROWS = 256


def default_chunk_rows(n_rows: int, vocab_size: int, d_model: int) -> int:
    chunks = math.ceil(vocab_size / d_model)
    return max(MIN_CHUNK_ROWS, 2 ** math.ceil(math.log2(max(1, math.ceil(n_rows / chunks)))))


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int,
                want_grads: bool, weight_grad_into: torch.Tensor | None, weight_grad_scale: float) -> torch.Tensor:
        n_rows = h.shape[0]
        valid_all = targets != IGNORE_INDEX
        n_valid = valid_all.sum().clamp_min(1)  # mean over the rows that count, as F.cross_entropy does
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if want_grads else None
        # d loss / d W goes either into the caller's running fp32 accumulator, already scaled, or into a buffer of
        # our own that the backward pass hands to autograd.
        if weight_grad_into is not None:
            grad_w, w_scale = weight_grad_into, weight_grad_scale
        else:
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grads else None
            w_scale = 1.0
        for start in range(0, n_rows, chunk_rows):
            rows = slice(start, start + chunk_rows)
            h_c, t_c, valid = h[rows], targets[rows], valid_all[rows]
            t_safe = t_c.clamp_min(0)
            logits = (h_c @ weight.t()).float()  # (c, V): the only vocabulary-sized buffer
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, t_safe[:, None]).squeeze(1)
            loss += ((lse - picked) * valid).sum()
            if want_grads:
                g = logits.sub_(lse[:, None]).exp_()  # softmax, in place over the logits
                g[torch.arange(g.shape[0], device=g.device), t_safe] -= 1.0
                g.mul_((valid / n_valid)[:, None])  # rows that do not count get no gradient
                grad_h[rows] = (g.to(weight.dtype) @ weight).to(h.dtype)
                grad_w.add_((g.t().to(h_c.dtype) @ h_c).float(), alpha=w_scale)  # fp32 accumulation across chunks
        ctx.save_for_backward(grad_h, grad_w if weight_grad_into is None else None)
        ctx.dtypes = (h.dtype, weight.dtype)
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        # Scale in place: these buffers are ours and used once, so no second (N, d) or (V, d) tensor is made.
        return (grad_h.mul_(grad_loss).to(h_dtype) if ctx.needs_input_grad[0] else None,
                grad_w.mul_(grad_loss).to(w_dtype) if ctx.needs_input_grad[1] and grad_w is not None else None,
                None, None, None, None, None)


def chunked_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 chunk_rows: int | None = None, weight_grad_into: torch.Tensor | None = None,
                                 weight_grad_scale: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of logits h @ weight.T against targets, never materializing the logits whole.

    h: (N, d) hidden states (already normed); weight: (V, d) unembedding; targets: (N,), IGNORE_INDEX rows skipped.

    weight_grad_into: an fp32 (V, d) accumulator. When given, weight_grad_scale * d loss / d W is added into it
    during this forward pass and autograd gets no weight gradient (pass weight detached). The sequential head loop
    uses it so that all heads share one accumulator instead of each holding its own (V, d) gradient until its
    backward; weight_grad_scale must then equal the factor the loss is multiplied by before .backward().
    """
    chunk_rows = chunk_rows or default_chunk_rows(h.shape[0], weight.shape[0], weight.shape[1])
    want_grads = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad or weight_grad_into is not None)
    return _ChunkedLinearCrossEntropy.apply(h, weight, targets, chunk_rows, want_grads, weight_grad_into,
                                            weight_grad_scale)


@torch.no_grad()
def chunked_loss_sum_and_correct(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy, number of correct top-1 predictions and number of scored positions, chunk by chunk
    (for evaluation). Targets equal to IGNORE_INDEX are not scored, as in training."""
    chunk_rows = chunk_rows or default_chunk_rows(h.shape[0], weight.shape[0], weight.shape[1])
    loss_sum = torch.zeros((), dtype=torch.float32, device=h.device)
    correct = torch.zeros((), dtype=torch.long, device=h.device)
    kept = targets != IGNORE_INDEX
    for start in range(0, h.shape[0], chunk_rows):
        logits = (h[start:start + chunk_rows] @ weight.t()).float()
        t, keep = targets[start:start + chunk_rows], kept[start:start + chunk_rows]
        losses = torch.logsumexp(logits, -1) - logits.gather(1, t.clamp(min=0)[:, None]).squeeze(1)
        loss_sum += torch.where(keep, losses, 0.0).sum()
        correct += ((logits.argmax(-1) == t) & keep).sum()
    return loss_sum, correct, kept.sum()
