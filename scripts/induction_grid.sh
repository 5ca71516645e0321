#!/usr/bin/env bash
# The induction grid of docs/experiments.md, resumable: a learning-rate pilot (n = 1, 1M tokens,
# each size at 3e-4, 1e-3 and 3e-3; the lowest final validation loss wins), then 3 seeds x n in {1, 2} per size at
# its learning rate, at the measured setting (P_FRESH=0.25, TOKENS=15000000: at the protocol's 0.05 and 3M nothing
# forms). Re-running skips what is done. Outputs under runs/experiments/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/experiments}
SIZES=${SIZES:-0.15M 0.45M 1M}
P_FRESH=${P_FRESH:-0.25}
TOKENS=${TOKENS:-15000000}
for size in $SIZES; do
  for lr in 3e-4 1e-3 3e-3; do
    multitoken experiment induction --sizes "$size" --n_future 1 --seeds 1 --tokens 1000000 --evaluations 2 \
      --lr "$lr" --out "$OUT/induction-lr-pilot/lr$lr" > /dev/null
  done
done
for size in $SIZES; do
  lr=$(python3 scripts/best_lr.py "$OUT/induction-lr-pilot" "$size-n1-s1")
  multitoken experiment induction --sizes "$size" --n_future 1,2 --seeds 3 --lr "$lr" --p_fresh "$P_FRESH" \
    --tokens "$TOKENS" --out "$OUT/induction-p$P_FRESH-$TOKENS"
done
