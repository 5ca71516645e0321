#!/usr/bin/env bash
# Copy an experiment grid's results (not its run directories) next to the docs, so the plots and tables regenerate
# without retraining: scripts/export_experiment.sh NAME [GRID_DIR]   (GRID_DIR defaults to runs/experiments/NAME)
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
src=${2:-runs/experiments/$name}
mkdir -p "docs/experiments/$name"
cp "$src/results.json" "$src/results.md" "docs/experiments/$name/"
for extra in "$src"/grid.json "$src"/*.png; do
  [ -f "$extra" ] && cp "$extra" "docs/experiments/$name/"
done
echo "exported $src -> docs/experiments/$name"
