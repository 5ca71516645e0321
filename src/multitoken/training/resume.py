"""Where a run picks up: the checkpoints a --resume may mean, full (unsharded) state loaded into a possibly sharded
model, and the metrics log cut back to the step the run restarts from."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from multitoken.checkpoint import list_checkpoints
from multitoken.checkpoint.layout import STEP_DIR
from multitoken.errors import CheckpointError
from multitoken.files import atomic_write_text


def resume_candidates(resume: bool | str, out_dir: Path) -> list[Path]:
    """Checkpoints to try, newest first: --resume PATH names one (or a run, its checkpoints), --resume the run's
    own. Nothing to resume is fine for a bare --resume (the run starts), not for a named one."""
    if isinstance(resume, str):
        path = Path(resume)
        if not path.exists():
            raise CheckpointError(f"--resume {path} does not exist: give a checkpoint (checkpoints/step_N) or a "
                                  "run directory")
        if STEP_DIR.match(path.name) or (path / "model.safetensors").exists():
            return [path]
        found = list_checkpoints(path)[::-1]
        if not found:
            raise CheckpointError(f"--resume {path}: no checkpoint in it (expected {path}/checkpoints/step_*)")
        return found
    existing = list_checkpoints(out_dir)[::-1]
    if existing and not resume:
        raise CheckpointError(f"{out_dir} already holds checkpoints: pass --resume to continue that run, "
                              "or --out_dir to start a new one")
    return existing


def load_full_state(model: nn.Module, optimizer, weights: dict, optim_state: dict, ckpt: Path,
                    distributed: bool) -> None:
    """Full (unsharded) weights and optimizer state into the possibly sharded model: any world size resumes any
    checkpoint, because checkpoints hold full tensors keyed by parameter name (torch.distributed.checkpoint's
    state-dict API does the sharding)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    # Checkpoints written before the optimizer state was keyed by parameter name: still fine in one process.
    by_index = bool(optim_state["state"]) and isinstance(next(iter(optim_state["state"])), int)
    if by_index and distributed:
        raise CheckpointError(f"{ckpt} keeps its optimizer state in the older by-index layout: resume it in "
                              "one process first (its next checkpoint has the layout any world size reads)")
    try:
        if by_index:
            model.load_state_dict(weights)
            optimizer.load_state_dict(optim_state)
        else:
            set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optim_state,
                           options=StateDictOptions(full_state_dict=True, strict=True))
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{ckpt} does not match this model ({type(e).__name__}): the checkpoint is "
                              "damaged or from another run") from None


def truncate_metrics(path: Path, step: int) -> int:
    """Keep only the metric records up to the step we start from: later ones are about to be redone, so the log
    ends up as an uninterrupted run's. A line torn by a kill or a full disk is dropped (returns how many). Written
    atomically, so a kill at this moment cannot lose the log."""
    if not path.exists():
        return 0
    kept, torn = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            torn += line.strip() != ""
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return torn
