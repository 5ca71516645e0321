"""Running a grid: data once, every run trained and evaluated (resuming whatever a previous sitting left), and the
results written as each run finishes: results.json, results.md and the plots."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from multitoken.experiments import arithmetic, bytelevel, induction
from multitoken.experiments.common import (Budget, RunSpec, evaluate_checkpoints, run_training, spec_record,
                                           train_config, write_results)
from multitoken.files import atomic_write_text

EXPERIMENTS = {"induction": induction, "arithmetic": arithmetic, "bytes": bytelevel}


def summarize(experiment: str, spec: RunSpec, budget: Budget, vocab_size: int, evals: list[dict]) -> dict:
    record = spec_record(experiment, spec, budget, vocab_size)
    last = evals[-1] if evals else {}
    record.update(tokens_trained=last.get("tokens"), evaluations=len(evals), final=last)
    if experiment == "induction":
        best = max(evals, key=lambda e: e["induction"]) if evals else {}
        record.update(best=best, curve=[[e["tokens"], e["induction"]] for e in evals])
    elif experiment == "arithmetic":
        record.update(curve=[[e["tokens"], e["in_domain"], e["out_of_domain"]] for e in evals])
    else:
        record.update(curve=[[e["tokens"], e["bpb"], e["tau"]] for e in evals])
    return record


def run_grid(experiment: str, specs: list[RunSpec], budget: Budget, setup, out: Path, device: torch.device,
             log: Callable[[str], None] = print) -> list[dict]:
    module = EXPERIMENTS[experiment]
    out.mkdir(parents=True, exist_ok=True)
    data, tokenizer = module.data(budget, setup, out)
    metric = module.make_metric(setup, device, tokenizer, budget.seq_len)
    records = []
    for i, spec in enumerate(specs):
        log(f"[{i + 1}/{len(specs)}] {spec.name}")
        run_dir = out / "runs" / spec.name
        cfg = train_config(spec, budget, tokenizer.vocab_size, data, run_dir)
        run_training(cfg, log)
        evals = evaluate_checkpoints(run_dir, metric, device, log)
        records.append(summarize(experiment, spec, budget, tokenizer.vocab_size, evals))
        every = write_results(out, records)  # as each run finishes: a stopped grid keeps what it has
        write_report(experiment, every, out)
    return records


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def groups(records: list[dict]) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        out.setdefault((r["size"], r["n_future"]), []).append(r)
    return out


def table(experiment: str, records: list[dict]) -> str:
    """Mean ± sd over seeds, in percent, one row per (size, n)."""
    if experiment == "induction":
        lines = ["| size | non-embedding params | n | seeds | induction (best) | induction (final) | first mention "
                 "(final) | copy (final) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for (size, n), rs in groups(records).items():
            lines.append(f"| {size} | {rs[0]['non_embedding_params']:,} | {n} | {len(rs)} | "
                         f"{_mean_sd([r['best']['induction'] for r in rs])} | "
                         f"{_mean_sd([r['final']['induction'] for r in rs])} | "
                         f"{_mean_sd([r['final']['first_mention'] for r in rs])} | "
                         f"{_mean_sd([r['final']['copy'] for r in rs])} |")
    elif experiment == "bytes":
        lines = ["| size | non-embedding params | n | seeds | head-1 bits/byte | tau (bytes per forward) |",
                 "|---|---:|---:|---:|---:|---:|"]
        for (size, n), rs in groups(records).items():
            bpb = [r["final"]["bpb"] for r in rs]
            tau = [r["final"]["tau"] for r in rs]
            spread = lambda v: f"{statistics.mean(v):.4f}" + (f" ± {statistics.stdev(v):.4f}" if len(v) > 1 else "")  # noqa: E731
            lines.append(f"| {size} | {rs[0]['non_embedding_params']:,} | {n} | {len(rs)} | {spread(bpb)} | "
                         f"{spread(tau)} |")
    else:
        lines = ["| size | non-embedding params | n | seeds | in domain (1-5 ops) | out of domain (6-10 ops) | "
                 + " | ".join(f"{m} ops" for m in arithmetic.OPERATIONS) + " |",
                 "|---|---:|---:|---:|---:|---:|" + "---:|" * len(arithmetic.OPERATIONS)]
        for (size, n), rs in groups(records).items():
            per_m = " | ".join(_mean_sd([r["final"]["exact"][str(m)] for r in rs]) for m in arithmetic.OPERATIONS)
            lines.append(f"| {size} | {rs[0]['non_embedding_params']:,} | {n} | {len(rs)} | "
                         f"{_mean_sd([r['final']['in_domain'] for r in rs])} | "
                         f"{_mean_sd([r['final']['out_of_domain'] for r in rs])} | {per_m} |")
    return "\n".join(lines) + "\n"


def write_report(experiment: str, records: list[dict], out: Path) -> None:
    from multitoken.experiments.plots import plot_arithmetic, plot_bytes, plot_induction

    unit = "bits/byte and bytes per forward" if experiment == "bytes" else "percent"
    atomic_write_text(out / "results.md", f"# {experiment}: mean ± sd over seeds, {unit}\n\n"
                      + table(experiment, records))
    if not records:
        return
    {"induction": plot_induction, "arithmetic": plot_arithmetic, "bytes": plot_bytes}[experiment](
        records, out / f"{experiment}.png")
