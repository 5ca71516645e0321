"""Training memory and speed: next-token baseline vs multi-token strategies, each case measured in its own process.

Cases (all parameter-matched: the same n_layer, only n_future and the loss path change):

    ntp             n_future = 1, plain cross-entropy (logits materialized)
    ntp_chunked     n_future = 1, chunked cross-entropy
    mtp_naive       n_future = n, all heads' logits alive, one backward, plain cross-entropy
    mtp_sequential  n_future = n, the paper's head loop, plain cross-entropy
    mtp_chunked     n_future = n, the head loop with chunked cross-entropy (multitoken's default)

Peak memory. CUDA: `torch.cuda.max_memory_allocated` over the timed steps, minus what was allocated before them.
CPU: the process's peak resident set (VmHWM, reset through /proc/self/clear_refs before the timed steps) minus its
resident set at that moment, with glibc told to return every block of 64 KiB or more to the system on free
(MALLOC_MMAP_THRESHOLD_), so that resident memory follows live tensors. Both count what a training step adds on top
of the weights and optimizer state, which are the same in every case: activations, logits, gradients.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

CASES = ("ntp", "ntp_chunked", "mtp_naive", "mtp_sequential", "mtp_chunked")
_CASE_SETUP = {  # case -> (strategy, cross-entropy)
    "ntp": ("sequential", "plain"), "ntp_chunked": ("sequential", "chunked"),
    "mtp_naive": ("naive", "plain"), "mtp_sequential": ("sequential", "plain"),
    "mtp_chunked": ("sequential", "chunked"),
}


@dataclass
class BenchCase:
    case: str
    n_future: int
    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    batch_size: int
    seq_len: int
    steps: int
    device: str


def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def _ru_maxrss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def run_case(spec: BenchCase) -> dict:
    """Measure one case in this process (the worker side)."""
    import gc

    import torch

    from multitoken import ModelConfig, MTPModel, mtp_forward_backward

    device = torch.device(spec.device)
    strategy, ce = _CASE_SETUP[spec.case]
    torch.manual_seed(0)
    model = MTPModel(ModelConfig(vocab_size=spec.vocab_size, d_model=spec.d_model, n_layer=spec.n_layer,
                                 n_head=spec.n_head, n_future=spec.n_future, max_seq_len=spec.seq_len)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    tokens = torch.randint(0, spec.vocab_size, (spec.batch_size, spec.seq_len + spec.n_future), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)

    def step() -> None:
        with autocast:
            mtp_forward_backward(model, tokens, strategy, ce=ce)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    procfs = os.path.exists("/proc/self/clear_refs")
    if device.type == "cpu" and not procfs:  # no way to reset the peak: count from before the warm-up instead
        before = _ru_maxrss_bytes()
    step()  # warm-up: allocates the optimizer state, which is the same in every case
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    elif procfs:
        before = _proc_kib("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set to the current one
    start = time.perf_counter()
    for _ in range(spec.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak, method = torch.cuda.max_memory_allocated() - before, "torch.cuda.max_memory_allocated"
    elif procfs:
        peak, method = _proc_kib("VmHWM") * 1024 - before, "peak RSS over the timed steps (own process)"
    else:
        peak, method = _ru_maxrss_bytes() - before, "peak RSS from before the warm-up (own process; optimizer state included)"
    return {**asdict(spec), "peak_memory_bytes": peak, "tokens_per_s": spec.batch_size * spec.seq_len * spec.steps
            / seconds, "flops_per_token": flops_per_token(spec), "memory_method": method,
            "num_threads": torch.get_num_threads()}


def measure(spec: BenchCase, timeout: float = 1800) -> dict:
    """Run one case in a fresh process, so that no other case's memory or caches are counted."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    proc = subprocess.run([sys.executable, "-m", "multitoken.bench.train", json.dumps(asdict(spec))],
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"benchmark case {spec.case} (vocab {spec.vocab_size}, n_future {spec.n_future}) "
                           f"failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan(vocab_sizes: list[int], n_futures: list[int], cases: tuple[str, ...] = CASES, **shape) -> list[BenchCase]:
    """Every case to run: the next-token baselines per vocabulary, then the MTP cases per n > 1 (in CASES order)."""
    specs = []
    for vocab in vocab_sizes:
        specs += [BenchCase(case, 1, vocab, **shape) for case in CASES[:2] if case in cases]
        for n in n_futures:
            if n > 1:
                specs += [BenchCase(case, n, vocab, **shape) for case in CASES[2:] if case in cases]
    return specs


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One record per case from several rounds of the same plan: the median tokens/s and the largest peak memory.

    Cases alternate within each round, so slow drift of a shared machine touches every case alike; each round's
    tokens/s stay in `tokens_per_s_rounds`.
    """
    import statistics

    merged = []
    for same_case in zip(*rounds):
        speeds = [r["tokens_per_s"] for r in same_case]
        merged.append({**same_case[0], "tokens_per_s": statistics.median(speeds), "tokens_per_s_rounds": speeds,
                       "peak_memory_bytes": max(r["peak_memory_bytes"] for r in same_case)})
    return merged


def flops_per_token(spec: BenchCase) -> float:
    """Training arithmetic per token: 6 FLOPs per weight multiply-add (2 forward, 4 backward), the same for attention.

    Per layer: the q/k/v/o projections, SwiGLU's three matrices, and attention's QK^T and AV (a causal query sees
    (T + 1) / 2 keys on average, two matmuls: about T * d multiply-adds). Per head: one d x V unembedding. The ratio of
    two cases' FLOPs is the tokens/s ratio to expect if time were proportional to arithmetic.
    """
    from multitoken.config import ModelConfig

    c = ModelConfig(vocab_size=spec.vocab_size, d_model=spec.d_model, n_layer=spec.n_layer, n_head=spec.n_head,
                    n_future=spec.n_future, max_seq_len=spec.seq_len)
    q_width, kv_width = c.n_head * c.head_size, c.kv_heads * c.head_size
    per_layer = c.d_model * (2 * q_width + 2 * kv_width) + 3 * c.d_model * c.ffn_dim + (spec.seq_len + 1) * q_width
    return 6.0 * (c.n_layer * per_layer + c.n_future * c.d_model * c.vocab_size)


def format_train_table(records: list[dict]) -> str:
    lines = []
    for vocab in sorted({r["vocab_size"] for r in records}):
        rows = [r for r in records if r["vocab_size"] == vocab]
        base = {r["case"]: r for r in rows if r["n_future"] == 1}
        logits_mib = rows[0]["batch_size"] * rows[0]["seq_len"] * vocab * 4 / 2**20
        lines.append(f"vocab {vocab:,} (one fp32 logits tensor: {logits_mib:.0f} MiB)")
        lines.append(f"  {'case':<15} {'n':>2} {'peak MiB':>9} {'vs ntp':>7} {'vs ntp_chunked':>15} "
                     f"{'tokens/s':>9} {'vs ntp':>7} {'by FLOPs':>9}")
        for r in rows:
            mem, speed = r["peak_memory_bytes"] / 2**20, r["tokens_per_s"]
            ntp, ntpc = base.get("ntp"), base.get("ntp_chunked")
            speed_base = ntp or ntpc  # tokens/s against the plain baseline, else the chunked one when it alone ran
            vs_mem = f"{r['peak_memory_bytes'] / ntp['peak_memory_bytes']:.2f}x" if ntp else "-"
            vs_memc = f"{r['peak_memory_bytes'] / ntpc['peak_memory_bytes']:.2f}x" if ntpc else "-"
            vs_speed = f"{speed / speed_base['tokens_per_s']:.2f}x" if speed_base else "-"
            by_flops = f"{speed_base['flops_per_token'] / r['flops_per_token']:.2f}x" if speed_base else "-"
            lines.append(f"  {r['case']:<15} {r['n_future']:>2} {mem:>9.1f} {vs_mem:>7} {vs_memc:>15} "
                         f"{speed:>9.0f} {vs_speed:>7} {by_flops:>9}")
        lines.append("")
    first = records[0]
    rounds = len(first.get("tokens_per_s_rounds", [None]))
    timing = f"{first['steps']} timed steps after 1 warm-up" + (
        f", median of {rounds} rounds (cases alternate)" if rounds > 1 else "")
    lines.append(f"d_model {first['d_model']}, n_layer {first['n_layer']}, batch {first['batch_size']} x "
                 f"{first['seq_len']} tokens, {timing}, {first['device']}, "
                 f"{first['num_threads']} threads; memory: {first['memory_method']}")
    lines.append("tokens/s 'vs ntp': against ntp, or ntp_chunked when ntp did not run; 'by FLOPs': the same ratio if "
                 "time were proportional to training arithmetic")
    return "\n".join(lines)


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vocabs = sorted({r["vocab_size"] for r in records})
    labels = [f"{r['case']}\n(n={r['n_future']})" for r in records if r["vocab_size"] == vocabs[0]]
    fig, axes = plt.subplots(2, len(vocabs), figsize=(max(7.0, 5.5 * len(vocabs)), 7.5), squeeze=False)
    for col, vocab in enumerate(vocabs):
        rows = [r for r in records if r["vocab_size"] == vocab]
        colors = ["#888888" if r["n_future"] == 1 else "#1f77b4" for r in rows]
        for row, (key, scale, title) in enumerate((("peak_memory_bytes", 2**20, "peak step memory (MiB)"),
                                                  ("tokens_per_s", 1, "training tokens/s"))):
            ax = axes[row][col]
            ax.bar(range(len(rows)), [r[key] / scale for r in rows], color=colors)
            ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=35, ha="right")
            ax.set_title(f"vocab {vocab:,}: {title}", fontsize=10)
    fig.suptitle(f"multitoken bench train ({records[0]['device']}, d_model {records[0]['d_model']}, "
                 f"n_layer {records[0]['n_layer']}); grey: next-token baselines", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # the worker: one case, result as one JSON line on stdout
    print(json.dumps(run_case(BenchCase(**json.loads(sys.argv[1])))))
