"""Experiment: which n for bytes? (paper sections 3.3-3.4, Tables 1 and S3: n = 8 was best for byte-level 7B models)

Byte-level models with n = 1, 2, 4 and 8 heads, parameter-matched (the same 10 layers: trunk 9 .. 2 plus the heads),
train on the same tokens of the built-in corpus (this Python's standard library). Measured for each: head 1's
bits per byte on the validation split (the same windows for every n) and tau, the bytes per forward of greedy
self-speculative decoding with all n - 1 extra heads drafting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from multitoken.config import DataConfig
from multitoken.data.tokenizer import ByteTokenizer
from multitoken.experiments.common import Budget, RunSpec, Shape
from multitoken.model import MTPModel

SIZES = {"2M": Shape(128, 10, 4)}
QUICK_SIZES = {"tiny": Shape(32, 9, 2)}
MAX_N = 8  # evaluation windows are long enough for the largest n, so every model scores the same positions


@dataclass(frozen=True)
class Setup:
    eval_windows: int = 64  # validation windows of seq_len bytes for bits/byte
    prompts: int = 16  # validation prompts for tau
    prompt_len: int = 64
    new_tokens: int = 128


def data(budget: Budget, setup: Setup, out: Path) -> tuple[DataConfig, ByteTokenizer]:
    return DataConfig(), ByteTokenizer()  # the built-in corpus, bytes


def make_metric(setup: Setup, device: torch.device, tokenizer, seq_len: int):
    from multitoken.data.tokens import resolve_data
    from multitoken.decoding.speculative import speculative_generate
    from multitoken.training.evaluate import evaluate

    val = resolve_data(DataConfig(), tokenizer)[1].val
    starts = np.linspace(0, len(val) - seq_len - MAX_N, setup.eval_windows).astype(np.int64)
    windows = torch.from_numpy(np.stack([val[s:s + seq_len + MAX_N] for s in starts]).astype(np.int64))
    p_starts = np.linspace(0, len(val) - setup.prompt_len, setup.prompts * 2 + 1).astype(np.int64)[1::2]
    prompts = torch.from_numpy(np.stack([val[s:s + setup.prompt_len] for s in p_starts]).astype(np.int64))

    def metric(model: MTPModel) -> dict:
        model.eval()
        n = model.n_future
        batches = [windows[i:i + 16, :seq_len + n].to(device) for i in range(0, len(windows), 16)]
        result = evaluate(model, batches, device, byte_level=True)
        tau = 1.0
        if n > 1:
            _, stats = speculative_generate(model, prompts.to(device), setup.new_tokens, draft_len=n - 1)
            tau = stats.tau
        return {"bpb": result["bpb"][0], "loss": result["loss"][0], "bpb_per_head": result["bpb"], "tau": tau}

    return metric


def grid(sizes: dict[str, Shape], n_futures: list[int], seeds: list[int]) -> list[RunSpec]:
    return [RunSpec(size, shape, n, seed) for size, shape in sizes.items() for seed in seeds for n in n_futures]
