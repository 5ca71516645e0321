"""The prepared GPU run cannot rot between the rare sessions that have a GPU: its --dry-run walks every step on the
CPU at tiny sizes (the gpu-marked tests with CPU settings, bench train, a training run, bench decode, distilling and
training heads and a drafter, the arithmetic grid) and must end with every step ok."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_step(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    failed = {name: step.get("error") for name, step in report["steps"].items() if step["status"] != "ok"}
    assert done.returncode == 0 and not failed, (failed, done.stderr[-2000:])
    assert list(report["steps"]) == ["env", "tests", "bench_train", "default_run", "bench_decode", "smol",
                                     "arithmetic"]
    assert report["steps"]["bench_decode"]["results"][0]["identical"]
    assert (tmp_path / "smol-drafter-extra" / "extra.safetensors").stat().st_size > 0
