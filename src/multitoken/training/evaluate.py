"""Per-head validation: mean cross-entropy (nats, and bits per byte for byte-level data) and top-1 accuracy."""

from __future__ import annotations

import math
from typing import Iterable

import torch

from multitoken.model import MTPModel
from multitoken.training.loss import mtp_eval_batch
from multitoken.training.runtime import autocast_for


@torch.no_grad()
def evaluate(model: MTPModel, batches: Iterable[torch.Tensor], device: torch.device, precision: str = "auto",
             byte_level: bool = True) -> dict:
    """Validation metrics per head (lists, head 1 first) over the given window batches."""
    was_training = model.training
    model.eval()
    loss_sum = correct = None
    count = 0
    for tokens in batches:
        tokens = tokens.to(device, non_blocking=True)
        with autocast_for(device, precision):
            batch_loss, batch_correct = mtp_eval_batch(model, tokens)
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        count += tokens.shape[0] * (tokens.shape[1] - model.n_future)
    model.train(was_training)
    if count == 0:
        raise ValueError("no validation batches")
    losses = (loss_sum / count).tolist()  # the one host sync of the whole evaluation
    result = {"loss": losses, "acc": (correct.double() / count).tolist(), "tokens": count}
    if byte_level:  # one token is one byte, so bits per byte is the loss in base 2
        result["bpb"] = [x / math.log(2) for x in losses]
    return result


def format_eval_table(result: dict) -> str:
    """A small aligned table, one row per head."""
    has_bpb = "bpb" in result
    header = f"{'head':>4}  {'predicts':>8}  {'loss (nats)':>11}" + (f"  {'bits/byte':>9}" if has_bpb else "") \
        + f"  {'top-1 acc':>9}"
    rows = [header, "-" * len(header)]
    for i, loss in enumerate(result["loss"]):
        row = f"{i + 1:>4}  {'t+' + str(i + 1):>8}  {loss:>11.4f}"
        if has_bpb:
            row += f"  {result['bpb'][i]:>9.4f}"
        rows.append(row + f"  {result['acc'][i]:>9.2%}")
    return "\n".join(rows)
