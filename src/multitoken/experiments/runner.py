"""Running a grid: data once, every run trained and evaluated (resuming whatever a previous sitting left), and the
results written as each run finishes: results.json, results.md and the plots."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from multitoken.experiments import arithmetic, bytelevel, induction
from multitoken.experiments.common import (Budget, RunSpec, evaluate_checkpoints, run_training, spec_record,
                                           train_config, write_results)
from multitoken.errors import ConfigError
from multitoken.files import atomic_write_text, read_json

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
    claim_grid(experiment, budget, setup, out)
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


def claim_grid(experiment: str, budget: Budget, setup, out: Path) -> None:
    """Record the grid's settings in OUT/grid.json, or refuse settings that differ from those recorded: a grid's runs
    share one data set and one schedule, and continuing it with another (say another --p_fresh or --tokens) would
    silently mix runs that cannot be compared."""
    settings = {"experiment": experiment, "budget": dataclasses.asdict(budget), "setup": dataclasses.asdict(setup)}
    path = out / "grid.json"
    if not path.exists():
        atomic_write_text(path, json.dumps(settings, indent=1) + "\n")
        return
    recorded = read_json(path, "restore it, or delete it if the settings are known to match", ConfigError)
    if recorded != settings:
        differ = [f"{part}.{key} {recorded.get(part, {}).get(key)!r} -> {value!r}"
                  for part in ("budget", "setup") for key, value in settings[part].items()
                  if recorded.get(part, {}).get(key) != value]
        if recorded.get("experiment") != experiment:
            differ.insert(0, f"experiment {recorded.get('experiment')!r} -> {experiment!r}")
        raise ConfigError(f"{out} holds a grid with other settings ({'; '.join(differ)}): give a new --out, or "
                          "the recorded settings to continue it")


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def in_order(records: list[dict]) -> list[dict]:
    """Smallest size first, then n, then seed, whatever order the runs finished in (several processes sharing a grid
    finish them interleaved)."""
    return sorted(records, key=lambda r: (r["non_embedding_params"], r["n_future"], r["seed"]))


def groups(records: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """The records by (size, n), in order."""
    out: dict[tuple[str, int], list[dict]] = {}
    for r in in_order(records):
        out.setdefault((r["size"], r["n_future"]), []).append(r)
    return out


def table(experiment: str, records: list[dict], reference: dict | None = None) -> str:
    """Mean ± sd over seeds, in percent, one row per (size, n); for arithmetic, a last row for `reference` (what
    answering without reading the question scores) when given."""
    if experiment == "induction":
        lines = ["| size | non-embedding params | n | seeds | induction (best) | induction (final) | first mention "
                 "(final) | copy (final) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for (size, n), rs in groups(records).items():
            lines.append(f"| {size} | {rs[0]['non_embedding_params']:,} | {n} | {len(rs)} | "
                         f"{_mean_sd([r['best']['induction'] for r in rs])} | "
                         f"{_mean_sd([r['final']['induction'] for r in rs])} | "
                         f"{_mean_sd([r['final']['first_mention'] for r in rs])} | "
                         f"{_mean_sd([r['final']['copy'] for r in rs])} |")
        lines += ["", f"Every run: its best checkpoint, and when it formed induction (first checkpoint at or above "
                  f"{100 * induction.FORMED:.0f}%, about {induction.FORMED / induction.CHANCE:.0f}x chance)", "",
                  "| run | n | seed | best | best at (tokens) | formed at (tokens) | final |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in in_order(records):
            formed = next((tokens for tokens, value in r.get("curve", []) if value >= induction.FORMED), None)
            lines.append(f"| {r['run']} | {r['n_future']} | {r['seed']} | {100 * r['best']['induction']:.1f} | "
                         f"{r['best']['tokens'] / 1e6:.1f}M | {f'{formed / 1e6:.1f}M' if formed else 'never'} | "
                         f"{100 * r['final']['induction']:.1f} |")
    elif experiment == "bytes":
        lines = ["| size | non-embedding params | n | seeds | head-1 bits/byte | tau (bytes per forward) |",
                 "|---|---:|---:|---:|---:|---:|"]
        for (size, n), rs in groups(records).items():
            bpb = [r["final"]["bpb"] for r in rs]
            tau = [r["final"]["tau"] for r in rs]
            spread = lambda v: (f"{statistics.mean(v):.4f}"  # noqa: E731
                                + (f" ± {statistics.stdev(v):.4f}" if len(v) > 1 else ""))
            lines.append(f"| {size} | {rs[0]['non_embedding_params']:,} | {n} | {len(rs)} | {spread(bpb)} | "
                         f"{spread(tau)} |")
    else:
        lines = ["| size | non-embedding params | n | seeds | in domain (1-5 ops) | out of domain (6-10 ops) | "
                 "per coefficient, in domain | per coefficient, out of domain | "
                 + " | ".join(f"{m} ops" for m in arithmetic.OPERATIONS) + " |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(arithmetic.OPERATIONS)]

        def row(label: str, params: str, n: str, seeds: str, finals: list[dict]) -> str:
            per_coefficient = [arithmetic.domain_means(f["per_coefficient"]) for f in finals]
            per_m = " | ".join(_mean_sd([f["exact"][str(m)] for f in finals]) for m in arithmetic.OPERATIONS)
            return (f"| {label} | {params} | {n} | {seeds} | {_mean_sd([f['in_domain'] for f in finals])} | "
                    f"{_mean_sd([f['out_of_domain'] for f in finals])} | "
                    f"{_mean_sd([p[0] for p in per_coefficient])} | {_mean_sd([p[1] for p in per_coefficient])} | "
                    f"{per_m} |")

        for (size, n), rs in groups(records).items():
            lines.append(row(size, f"{rs[0]['non_embedding_params']:,}", str(n), str(len(rs)),
                             [r["final"] for r in rs]))
        if reference:  # one value, no spread: "± 0.0" would read as a measured sd
            lines.append(row("most frequent answer, no model", "-", "-", "-", [reference]).replace(" ± 0.0", ""))
    return "\n".join(lines) + "\n"


def reference(experiment: str, out: Path) -> dict | None:
    """What a model that ignores its input scores on the grid's test set (arithmetic only), from OUT/grid.json's
    setup; None when there is none to read (a report from results.json alone)."""
    if experiment != "arithmetic":
        return None
    try:
        setup = json.loads((out / "grid.json").read_text())["setup"]
        return arithmetic.majority_reference(arithmetic.Setup(**setup))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_report(experiment: str, records: list[dict], out: Path) -> str:
    """OUT/results.md and OUT/<experiment>.png from the records; returns the markdown table."""
    from multitoken.experiments.plots import plot_arithmetic, plot_bytes, plot_induction

    unit = "bits/byte and bytes per forward" if experiment == "bytes" else "percent"
    floor = reference(experiment, out)
    markdown = table(experiment, records, floor)
    atomic_write_text(out / "results.md", f"# {experiment}: mean ± sd over seeds, {unit}\n\n" + markdown)
    if records:
        if experiment == "arithmetic":
            plot_arithmetic(records, out / "arithmetic.png", floor)
        else:
            {"induction": plot_induction, "bytes": plot_bytes}[experiment](records, out / f"{experiment}.png")
    return markdown
