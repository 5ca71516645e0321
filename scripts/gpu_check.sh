#!/usr/bin/env bash
# The prepared GPU run (scripts/gpu_check.py): every GPU check in one call, JSON to one folder; see docs/gpu.md.
#   scripts/gpu_check.sh --out "$OUT"            on a CUDA machine
#   scripts/gpu_check.sh --out /tmp/x --dry-run  the same steps on this CPU at tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
