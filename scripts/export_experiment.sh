#!/usr/bin/env bash
# Copy an experiment grid's results (not its run directories) next to the docs, so the plots and tables regenerate
# without retraining: scripts/export_experiment.sh induction [runs/experiments]
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
src=${2:-runs/experiments}/$name
mkdir -p "docs/experiments/$name"
cp "$src/results.json" "$src/results.md" "docs/experiments/$name/"
[ -f "$src/$name.png" ] && cp "$src/$name.png" "docs/experiments/$name/"
echo "exported $src -> docs/experiments/$name"
