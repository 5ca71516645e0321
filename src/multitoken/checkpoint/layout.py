"""Where checkpoints live in a run directory, and which files make one."""

from __future__ import annotations

import re
from pathlib import Path

STEP_DIR = re.compile(r"^step_(\d+)$")
REQUIRED_FILES = ("model.safetensors", "config.yaml", "tokenizer_config.json", "meta.json")
MODEL_METADATA_KEY = "multitoken.model"  # the model config, saved inside model.safetensors beside the weights


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def looks_like_checkpoint(path: Path) -> bool:
    """A checkpoint folder, complete or not: named like one, or holding one of its own files (a run directory holds a
    config.yaml too, and its checkpoints/ folder)."""
    if (path / "checkpoints").is_dir():
        return False
    return STEP_DIR.match(path.name) is not None or any((path / f).is_file() for f in REQUIRED_FILES
                                                        if f != "config.yaml")
