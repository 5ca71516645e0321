"""Per-head validation: mean cross-entropy (nats, and bits per byte for byte-level data) and top-1 accuracy."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from multitoken.model import MTPModel
from multitoken.training.distributed import all_reduce_
from multitoken.training.loss import Targets, mtp_eval_batch
from multitoken.training.runtime import autocast_for


@torch.no_grad()
def evaluate(model: MTPModel, batches: Sequence[torch.Tensor], device: torch.device, precision: str = "auto",
             byte_level: bool = True, batch_fn: Callable | None = None, counted: Sequence[bool] | None = None,
             eot_id: int | None = None, drafter_steps: int = 0, targets_from: Targets = "text") -> dict:
    """Validation metrics per head (lists, head 1 first) over the given window batches.

    eot_id: score only the targets training scores with document masking on (none in the next document).
    drafter_steps > 0: the drafter's unrolled steps too, as drafter_loss, drafter_acc (step 1 first) and
    drafter_tau_sim. targets_from: what the extra heads and the drafter are scored against, as in training.

    In a distributed run each rank passes its share of the batches and the sums are added over ranks. batch_fn
    replaces `mtp_eval_batch(model, tokens)` (FSDP2 needs the call to go through the sharded module); batches whose
    `counted` flag is false run (every rank must run as many forwards) but do not count.
    """
    was_training = model.training
    model.eval()
    n = model.n_future + drafter_steps
    batch_fn = batch_fn or (lambda tokens: mtp_eval_batch(model, tokens, eot_id, drafter_steps, targets_from))
    totals = torch.zeros(4, n, dtype=torch.float64, device=device)  # loss sums, top-1 hits, loss positions, positions
    for j, tokens in enumerate(batches):
        tokens = tokens.to(device, non_blocking=True)
        with autocast_for(device, precision):
            batch_sums = batch_fn(tokens)
        if counted is None or counted[j]:
            totals += torch.stack(batch_sums).to(totals.dtype)
    model.train(was_training)
    loss_sum, correct, loss_count, count = all_reduce_(totals).tolist()  # the one host sync of the evaluation
    if count[0] == 0:
        raise ValueError("no validation positions")
    losses = [s / max(c, 1) for s, c in zip(loss_sum, loss_count)]
    acc = [h / max(c, 1) for h, c in zip(correct, count)]
    n = model.n_future
    result = {"loss": losses[:n], "acc": acc[:n], "tokens": int(count[0]), "tau_sim": simulated_tau(acc[:n])}
    if drafter_steps:  # step s's accuracy is conditional on the steps before it being right, as acceptance is
        result.update(drafter_loss=losses[n:], drafter_acc=acc[n:], drafter_tau_sim=simulated_tau([1.0, *acc[n:]]))
    losses, loss_count, count = losses[:n], loss_count[:n], count[:n]
    if model.config.draft_vocab and n > 1:  # how much of what the extra heads must guess their vocabulary holds
        result["draft_coverage"] = [c / max(t, 1) for c, t in zip(loss_count[1:], count[1:])]
        result["draft_vocab"] = model.config.draft_vocab
    if byte_level:  # one token is one byte, so bits per byte is the loss in base 2
        result["bpb"] = [x / math.log(2) for x in losses]
    return result


def simulated_tau(acc: Sequence[float]) -> float:
    """Tokens per forward that self-speculative decoding would accept if head i's draft were right with probability
    acc[i] independently: 1 + acc_2 + acc_2 acc_3 + ... (the verifier's own token, then the longest agreeing
    prefix). A cheap training-time proxy for decoding speed; `multitoken bench decode` measures the real tau."""
    tau, run = 1.0, 1.0
    for a in acc[1:]:
        run *= a
        tau += run
    return tau


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
    if len(result["loss"]) > 1 and "tau_sim" in result:
        rows.append(f"simulated tokens per forward with self-speculative decoding: {result['tau_sim']:.2f}")
    for s, (loss, acc) in enumerate(zip(result.get("drafter_loss", []), result.get("drafter_acc", []))):
        row = f"{'d' + str(s + 1):>4}  {'t+' + str(s + 2):>8}  {loss:>11.4f}"
        rows.append(row + (f"  {loss / math.log(2):>9.4f}" if has_bpb else "") + f"  {acc:>9.2%}")
    if "drafter_tau_sim" in result:
        rows.append(f"simulated tokens per forward with the drafter's chain (d1.. after the next token): "
                    f"{result['drafter_tau_sim']:.2f}")
    if "draft_coverage" in result:
        share = min(result["draft_coverage"])
        rows.append(f"extra heads draft over {result['draft_vocab']:,} tokens: at least {share:.1%} of their targets "
                    "among them (loss over those, top-1 over all)")
    return "\n".join(rows)
