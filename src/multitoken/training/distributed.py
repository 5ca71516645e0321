"""Data parallelism on PyTorch's own engine: torchrun's environment, DDP or FSDP2 applied from outside the model.

The model stays single-device code (torchtitan's rule); this file wraps it. What is wrapped is the `MTPObjective`,
model and loss together, because the memory-efficient head loop lives in the loss: `mtp_loss` runs every head's
forward and backward inside one differentiable op, so a training micro-step is one forward and one backward call,
and both DDP's reducer and FSDP2's reduce-scatter fire once per step (docs/distributed.md).

- DDP: the objective wrapped whole; gradient accumulation skips the all-reduce on inner micro-steps (`no_sync`).
- FSDP2 (`fully_shard`): every trunk layer is its own group (gathered layer by layer); the root group holds the
  embeddings, the heads, the shared norm and the unembedding. The heads must stay in the root group: their backward
  passes run inside the head loop's forward, where a group of their own would have nothing to reduce.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

from multitoken.errors import ConfigError
from multitoken.model import MTPModel
from multitoken.training.loss import CrossEntropy, Strategy, Targets, mtp_eval_batch, mtp_loss


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. A plain single-process run is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment):
    NCCL on GPUs, gloo on CPU. Returns this rank's place and its device (cuda:LOCAL_RANK on GPUs)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device
                                if device.type == "cuda" else None)
    return info, device


def shutdown_distributed(barrier: bool = True) -> None:
    if dist.is_initialized():
        if barrier:
            dist.barrier()  # nobody tears down while a peer still writes its last checkpoint
        dist.destroy_process_group()


class MTPObjective(nn.Module):
    """The model and its training loss as one module, so a data-parallel wrapper sees the whole micro-step."""

    def __init__(self, model: MTPModel, strategy: Strategy = "sequential", ce: CrossEntropy = "chunked",
                 head_weights: Sequence[float] | None = None, eot_id: int | None = None,
                 drafter_steps: int = 0, drafter_weight: float = 1.0, targets_from: Targets = "text") -> None:
        super().__init__()
        self.model = model
        self.strategy, self.ce, self.head_weights, self.eot_id = strategy, ce, head_weights, eot_id
        self.drafter_steps, self.drafter_weight, self.targets_from = drafter_steps, drafter_weight, targets_from

    def forward(self, tokens: torch.Tensor, loss_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, per_head) of `mtp_loss` (the drafter's steps after the heads): call total.backward()."""
        return mtp_loss(self.model, tokens, self.strategy, self.head_weights, loss_scale, self.ce, self.eot_id,
                        self.drafter_steps, self.drafter_weight, self.targets_from)

    def evaluate(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head loss sums, top-1 hit counts and scored positions (`mtp_eval_batch`, the training objective's
        targets); under FSDP2 gathers the weights first."""
        return mtp_eval_batch(self.model, tokens, self.eot_id, self.drafter_steps, self.targets_from)


def apply_parallel(objective: MTPObjective, mode: str, device: torch.device) -> nn.Module:
    """Wrap the objective for data parallelism: 'none', 'ddp' or 'fsdp'. The MTPModel inside keeps its identity
    (FSDP2 shards it in place), so checkpoints always save `objective.model`."""
    if mode == "none":
        return objective
    if not dist.is_initialized():
        raise ConfigError(f"parallel={mode!r} needs a process group: launch with torchrun "
                          "(e.g. torchrun --nproc_per_node=2 -m multitoken train ...)")
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        for layer in objective.model.layers[:-1]:  # trunk layers; layers[-1] is head 1
            fully_shard(layer)
        fully_shard(objective)
        register_fsdp_forward_method(objective, "evaluate")
        return objective
    raise ConfigError(f"unknown parallel mode {mode!r}: use 'auto', 'none', 'ddp' or 'fsdp'")


def gradient_sync(wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Reduce gradients in this micro-step's backward only when sync is true (the last micro-step of a step)."""
    if hasattr(wrapped, "no_sync"):  # DDP
        return contextlib.nullcontext() if sync else wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or average) a metric tensor over ranks, in place; a no-op in a single process."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.AVG if op == "avg" and dist.get_backend() == "nccl"
                        else dist.ReduceOp.SUM)
        if op == "avg" and dist.get_backend() != "nccl":  # gloo has no AVG
            tensor.div_(dist.get_world_size())
    return tensor
