"""Evaluate the checkpoints a running (or stopped) experiment grid has written so far, without waiting for its runs
to finish: each run's evaluations.jsonl is the same cache the grid fills, so nothing is evaluated twice. Prints one
line per checkpoint.

    python scripts/evaluate_so_far.py --out runs/experiments/arithmetic-pilot
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from multitoken.experiments.common import Budget, evaluate_checkpoints
from multitoken.experiments.runner import EXPERIMENTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="The grid's folder (it holds grid.json).")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (leave the rest to the training).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = json.loads((args.out / "grid.json").read_text())
    module = EXPERIMENTS[grid["experiment"]]
    setup = module.Setup(**grid["setup"])
    budget = Budget(**grid["budget"])
    _, tokenizer = module.data(budget, setup, args.out)  # prepared already: this only reads it back
    metric = module.make_metric(setup, torch.device("cpu"), tokenizer, budget.seq_len)
    for run_dir in sorted((args.out / "runs").iterdir()):
        evaluate_checkpoints(run_dir, metric, torch.device("cpu"), print)
    print(json.dumps({"setup": dataclasses.asdict(setup)}))


if __name__ == "__main__":
    main()
