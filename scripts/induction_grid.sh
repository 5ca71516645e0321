#!/usr/bin/env bash
# The induction grid of docs/experiments.md, resumable: a learning-rate pilot (n = 1, a third of the token budget,
# each size at 3e-4, 1e-3 and 3e-3; the lowest final validation loss wins), then 3 seeds x n in {1, 2} per size at
# its learning rate. Re-running skips what is done. Outputs under runs/experiments/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/experiments}
SIZES=${SIZES:-0.15M 0.45M 1M}
for size in $SIZES; do
  for lr in 3e-4 1e-3 3e-3; do
    multitoken experiment induction --sizes "$size" --n_future 1 --seeds 1 --tokens 1000000 --evaluations 2 \
      --lr "$lr" --out "$OUT/induction-lr-pilot/lr$lr" > /dev/null
  done
done
for size in $SIZES; do
  lr=$(python3 - "$OUT" "$size" <<'PY'
import json, sys
from pathlib import Path
out, size = Path(sys.argv[1]), sys.argv[2]
losses = {}
for lr in ("3e-4", "1e-3", "3e-3"):
    records = [json.loads(l) for l in (out / f"induction-lr-pilot/lr{lr}/runs/{size}-n1-s1/metrics.jsonl").read_text().splitlines()]
    losses[lr] = [r for r in records if r["split"] == "val"][-1]["loss"][0]
best = min(losses, key=losses.get)
print(f"{size}: validation loss by lr {losses} -> {best}", file=sys.stderr)
print(best)
PY
)
  multitoken experiment induction --sizes "$size" --n_future 1,2 --seeds 3 --lr "$lr" --out "$OUT/induction"
done
