#!/usr/bin/env bash
# The arithmetic grid of docs/experiments.md, resumable: a learning-rate pilot (S, n = 1, a third of the token
# budget, 3e-3, 1e-3 and 3e-4; the lowest final validation loss wins), then S x n in {1, 2, 4} and M x n = 1, 3 seeds
# each, at that learning rate. Re-running skips what is done. Outputs under runs/experiments/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/experiments}
for lr in 3e-3 1e-3 3e-4; do
  multitoken experiment arithmetic --sizes S --n_future 1 --seeds 1 --tokens 1000000 --evaluations 1 \
    --per_operations 500 --lr "$lr" --out "$OUT/arithmetic-lr-pilot/lr$lr" > /dev/null
done
lr=$(python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
losses = {}
for lr in ("3e-3", "1e-3", "3e-4"):
    records = [json.loads(l) for l in (out / f"arithmetic-lr-pilot/lr{lr}/runs/S-n1-s1/metrics.jsonl").read_text().splitlines()]
    losses[lr] = [r for r in records if r["split"] == "val"][-1]["loss"][0]
best = min(losses, key=losses.get)
print(f"S: validation loss by lr {losses} -> {best}", file=sys.stderr)
print(best)
PY
)
multitoken experiment arithmetic --sizes S --n_future 1,2,4 --seeds 3 --lr "$lr" --out "$OUT/arithmetic"
multitoken experiment arithmetic --sizes M --n_future 1 --seeds 3 --lr "$lr" --out "$OUT/arithmetic"
