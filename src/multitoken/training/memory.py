"""What a run will need in memory, checked against what the machine has before anything is allocated.

A run too large for the machine otherwise fails late and badly: an allocator error deep in a step, minutes of
swapping, or the kernel's out-of-memory killer. The estimate is deliberately simple (fp32, the largest terms only)
and errs high only by small factors, so it refuses runs that are hopeless, not runs that are tight: it refuses when
the estimate exceeds what is available, and then names the setting that dominates it.

    parameters    4 bytes each; training adds a gradient and AdamW's two moments (16 bytes each in all)
    activations   what the backward keeps per trunk layer: about 16 values of d_model per position (the attention
                  projections, the MLP's 4 d_model hidden units, norms, residuals), and the head being run
    logits        the largest cross-entropy block: all positions x vocabulary (plain), or one chunk of rows
                  (chunked); logits, their softmax and its gradient
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from multitoken.config import ModelConfig
from multitoken.errors import ConfigError

ACTIVATION_VALUES_PER_LAYER = 16  # values of d_model kept per position and layer for the backward (see above)
LOGIT_COPIES = 3  # logits, softmax and gradient of one cross-entropy block


def parameter_count(config: ModelConfig) -> int:
    """Parameters of the model, counted on the meta device (nothing allocated)."""
    from multitoken.model import MTPModel

    with torch.device("meta"):
        model = MTPModel(config)
    return sum(p.numel() for p in model.parameters())


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory a new allocation can get: free GPU memory, or the kernel's MemAvailable (None where unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int  # bytes of weights (and, training, their gradients and optimizer state)
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.logits


def training_estimate(config: ModelConfig, batch_size: int, seq_len: int, chunked: bool = True,
                      all_heads_logits: bool = False) -> MemoryEstimate:
    """One training step's peak (see the module docstring). all_heads_logits: every head's logits alive at once
    (the naive loss), not one head's at a time."""
    from multitoken.training.chunked_ce import default_chunk_rows

    positions = batch_size * seq_len
    activations = 4 * positions * config.d_model * ACTIVATION_VALUES_PER_LAYER * (config.n_trunk_layers + 1)
    rows = min(positions, default_chunk_rows(positions, config.vocab_size, config.d_model)) if chunked else positions
    logits = 4 * LOGIT_COPIES * rows * config.vocab_size * (config.n_future if all_heads_logits else 1)
    return MemoryEstimate(16 * parameter_count(config), activations, logits)


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.0f} MB"


def check_fits(estimate: MemoryEstimate, device: torch.device | str, what: str, config: ModelConfig,
               batch_flags: str = "--batch_size / --seq_len", vocab_flag: str = "--model.vocab_size") -> None:
    """Refuse, in one line, a run whose estimate exceeds the memory available, naming the setting that dominates."""
    have = available_bytes(device)
    if have is None or estimate.total <= have:
        return
    parts = {"parameters and optimizer state": estimate.parameters, "activations": estimate.activations,
             "logits": estimate.logits}
    largest = max(parts, key=parts.get)
    embedding_share = 2 * config.vocab_size * config.d_model / max(1, estimate.parameters / 16)
    if largest == "parameters and optimizer state":
        fix = (f"a smaller {vocab_flag} (the embeddings of {config.vocab_size:,} tokens are most of the model)"
               if embedding_share > 0.5 else "a smaller model (--model.d_model, --model.n_layer)")
    else:
        fix = f"a smaller {batch_flags}" + (f" or {vocab_flag}" if largest == "logits" else "")
    detail = ", ".join(f"{name} {_gb(n)}" for name, n in parts.items() if n >= 0.01 * estimate.total)
    raise ConfigError(f"{what} needs about {_gb(estimate.total)} of memory ({detail}) but {torch.device(device)} has "
                      f"{_gb(have)} available: use {fix}")
