"""The learning-rate pilot's winner: the lowest final head-1 validation loss of one run over the pilot's rates.

    python3 scripts/best_lr.py runs/experiments/induction-lr-pilot 0.15M-n1-s1    # prints e.g. 3e-3
"""

import json
import sys
from pathlib import Path

RATES = ("3e-4", "1e-3", "3e-3")

pilot, run = Path(sys.argv[1]), sys.argv[2]
losses = {}
for lr in RATES:
    records = [json.loads(line) for line in (pilot / f"lr{lr}/runs/{run}/metrics.jsonl").read_text().splitlines()]
    losses[lr] = [r for r in records if r["split"] == "val"][-1]["loss"][0]
best = min(losses, key=losses.get)
print(f"{run}: validation loss by lr {losses} -> {best}", file=sys.stderr)
print(best)
