"""Running a grid: data once, every run trained and evaluated (resuming whatever a previous sitting left), and the
results written as each run finishes: results.json, results.md and the plots.

Every experiment is a module with one protocol, and `EXPERIMENTS` is the one registry of them:
    SIZES, QUICK_SIZES, QUICK_BUDGET, UNIT     its model sizes, the --quick grid's, and the table's unit
    setup_from_args(args) -> Setup             its settings (checked) from `multitoken experiment NAME`'s options
    specs(sizes, n_futures, seeds, args)       the runs of the grid
    data(budget, setup, out), make_metric(...) its documents, prepared once, and its evaluation
    summarize(evals) -> dict                   a run's record fields from its evaluations
    reference(setup) -> dict | None            what answering without reading the input scores (the floor row)
    table(records, reference) -> str           the markdown table, mean ± sd over seeds
    plot(records, path, reference)             its figure
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch

from multitoken.experiments import arithmetic, bytelevel, induction, sequential
from multitoken.experiments.common import (Budget, RunSpec, evaluate_checkpoints, run_training, spec_record,
                                           train_config, write_results)
from multitoken.errors import ConfigError
from multitoken.files import atomic_write_text, read_json, read_json_or

EXPERIMENTS = {"induction": induction, "arithmetic": arithmetic, "bytes": bytelevel, "sequential": sequential}


def summarize(experiment: str, spec: RunSpec, budget: Budget, vocab_size: int, evals: list[dict]) -> dict:
    record = spec_record(experiment, spec, budget, vocab_size)
    last = evals[-1] if evals else {}
    record.update(tokens_trained=last.get("tokens"), evaluations=len(evals), final=last)
    record.update(EXPERIMENTS[experiment].summarize(evals))
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


def table(experiment: str, records: list[dict], reference: dict | None = None) -> str:
    """The experiment's markdown table: mean ± sd over seeds, one row per (size, n), and the floor row where the
    experiment has one (`reference`)."""
    return EXPERIMENTS[experiment].table(records, reference)


def reference(experiment: str, out: Path) -> dict | None:
    """What a model that ignores its input scores on the grid's test set, from OUT/grid.json's setup; None where the
    experiment has no such floor or there is no grid.json to read (a report from results.json alone)."""
    grid = read_json_or(out / "grid.json")
    if grid is None or not isinstance(grid.get("setup"), dict):
        return None
    try:
        return EXPERIMENTS[experiment].reference(grid["setup"])
    except TypeError:  # a setup of another version's fields
        return None


def write_report(experiment: str, records: list[dict], out: Path) -> str:
    """OUT/results.md and OUT/<experiment>.png from the records; returns the markdown table."""
    module = EXPERIMENTS[experiment]
    floor = reference(experiment, out)
    markdown = table(experiment, records, floor)
    atomic_write_text(out / "results.md", f"# {experiment}: mean ± sd over seeds, {module.UNIT}\n\n" + markdown)
    if records:
        module.plot(records, out / f"{experiment}.png", floor)
    return markdown
