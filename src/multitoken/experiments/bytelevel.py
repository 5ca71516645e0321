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
from multitoken.errors import ConfigError
from multitoken.experiments.common import Budget, RunSpec, Shape
from multitoken.experiments.report import groups, mean_sd_plain as spread
from multitoken.model import MTPModel

SIZES = {"2M": Shape(128, 10, 4)}
QUICK_SIZES = {"tiny": Shape(32, 9, 2)}
DRAFTER_DEPTH = 3  # the sequential module's chain: 3 guesses, as deep as 4 parallel heads draft
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
        chained = DRAFTER_DEPTH if hasattr(model, "drafter") else 0
        batches = [windows[i:i + 16, :seq_len + n].to(device) for i in range(0, len(windows), 16)]
        result = evaluate(model, batches, device, byte_level=True, drafter_steps=chained)
        values = {"bpb": result["bpb"][0], "loss": result["loss"][0], "bpb_per_head": result["bpb"], "tau": 1.0}
        depth = n - 1 if n > 1 else chained  # the heads draft when there are any, else the drafter's chain
        if depth:
            _, stats = speculative_generate(model, prompts.to(device), setup.new_tokens, draft_len=depth)
            values.update(tau=stats.tau, acceptance=stats.acceptance_per_position)
        if chained:
            values.update(drafter_acc=result["drafter_acc"], drafter_tau_sim=result["drafter_tau_sim"])
        return values

    return metric


def grid(sizes: dict[str, Shape], n_futures: list[int], seeds: list[int]) -> list[RunSpec]:
    return [RunSpec(size, shape, n, seed) for size, shape in sizes.items() for seed in seeds for n in n_futures]


# --- the experiment's protocol (see `runner.py`) ----------------------------------------------------------------------

UNIT = "bits/byte and bytes per forward"
QUICK_BUDGET = Budget(tokens=16_384, seq_len=64, batch_tokens=512, evaluations=2, lr=3e-3)


def setup_from_args(a) -> Setup:
    # The default run's batch: 16 windows of 256 bytes.
    return Setup(eval_windows=8, prompts=2, prompt_len=16, new_tokens=16) if a.quick else Setup()


def specs(sizes: dict[str, Shape], n_futures: list[int], seeds: list[int], a) -> list[RunSpec]:
    if max(n_futures) > MAX_N:
        raise ConfigError(f"--n_future goes up to {MAX_N} here (got {max(n_futures)})")
    return grid(sizes, n_futures, seeds)


def summarize(evals: list[dict]) -> dict:
    return {"curve": [[e["tokens"], e["bpb"], e["tau"]] for e in evals]}


def reference(setup: dict) -> None:
    return None


def table(records: list[dict], reference: dict | None = None) -> str:
    lines = ["| size | non-embedding params | n | seeds | head-1 bits/byte | tau (bytes per forward) |",
             "|---|---:|---:|---:|---:|---:|"]

    for (size, n), rs in groups(records).items():
        lines.append(f"| {size} | {rs[0]['non_embedding_params']:,} | {n} | {len(rs)} | "
                     f"{spread([r['final']['bpb'] for r in rs])} | {spread([r['final']['tau'] for r in rs])} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path, reference: dict | None = None) -> None:
    from multitoken.experiments.plots import plot_bytes

    plot_bytes(records, path)
