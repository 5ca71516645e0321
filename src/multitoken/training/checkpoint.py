"""Writing checkpoints (atomically), removing old ones, and reading back what a resumed run needs.

The format, and reading a checkpoint for inference: `multitoken/checkpoint/`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from multitoken.checkpoint.layout import MODEL_METADATA_KEY, REQUIRED_FILES, checkpoints_dir, list_checkpoints
from multitoken.checkpoint.read import read_meta, read_train_config, read_weights, require_finite
from multitoken.config import ModelConfig, TrainConfig, to_dict
from multitoken.data.tokenizer import ByteTokenizer
from multitoken.errors import CheckpointError, TrainingError
from multitoken.files import build_aside
from multitoken.model import MTPModel

# Hidden names of a save in progress (tmp), of a checkpoint being replaced (old) or deleted (deleting).
_DEBRIS = re.compile(r"^\.(step_\d+)\.(tmp|old|deleting)-.+$")
LOW_SPACE_BYTES = 1 << 20  # a write that failed with less than this left free failed for want of space


def save_checkpoint(out_dir: str | Path, step: int, model: MTPModel | dict[str, torch.Tensor], cfg: TrainConfig,
                    tokenizer: ByteTokenizer, trainer_state: dict[str, Any], meta: dict[str, Any],
                    keep_last: int) -> Path:
    """Write one checkpoint. model: the model, or its full state dict (what a sharded run gathers on rank 0)."""
    root = checkpoints_dir(out_dir)
    final = root / f"step_{step:06d}"
    try:
        # Re-saving a step (e.g. after a resume) replaces it: the old one is moved aside, swapped, then deleted.
        with build_aside(final, replace=True) as tmp:
            weights = model if isinstance(model, dict) else model.state_dict()
            state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
            if cfg.model.tie_embeddings:  # one tensor under two names: stored once (read_weights restores it)
                state.pop("output.weight", None)
            save_file(state, tmp / "model.safetensors", metadata=weights_metadata(cfg.model, step=str(step)))
            (tmp / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            tokenizer.save(tmp)
            torch.save(trainer_state, tmp / "trainer.pt")
            (tmp / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=1) + "\n")
    except BaseException as e:
        if out_of_space(e, root):
            intact = list_checkpoints(out_dir)
            raise TrainingError(f"no space left on device writing checkpoint step {step} to {root}; "
                                  + (f"{intact[-1].name} is intact" if intact else "no earlier checkpoint exists")
                                  + ": free some space, then continue with --resume") from None
        raise
    for stale in list_checkpoints(out_dir)[:-keep_last]:
        remove_checkpoint(stale)
    sweep_debris(out_dir)
    return final


def weights_metadata(model: ModelConfig, **extra: str) -> dict[str, str]:
    """The safetensors header metadata of a checkpoint's weights: the model config travels with the tensors, so a
    config.yaml edited afterwards (a longer max_seq_len, another rope_theta) is caught when the weights are loaded."""
    return {"format": "pt", MODEL_METADATA_KEY: json.dumps(to_dict(model)), **extra}


def out_of_space(error: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for want of disk space. torch.save reports a full disk only as "unexpected pos"
    from its zip writer, so a nearly empty disk right after the failure counts too."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(error) or "os error 28" in str(error):  # safetensors' wording
        return True
    try:
        return isinstance(error, (OSError, RuntimeError)) and shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint so that a kill at any moment leaves it whole or gone from the listing: rename it to a
    hidden name in one step, then remove that."""
    aside = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def sweep_debris(out_dir: str | Path) -> list[str]:
    """Clear what killed saves and deletions left in a run's checkpoints folder (only the run's one writer may call
    this). A checkpoint that was moved aside to be replaced, and whose replacement never arrived, is put back.
    Returns what was done, for the log."""
    root = checkpoints_dir(out_dir)
    done = []
    if not root.is_dir():
        return done
    for path in sorted(root.iterdir()):
        m = _DEBRIS.match(path.name)
        if not m:
            continue
        final = root / m.group(1)
        if m.group(2) == "old" and not final.exists():
            os.rename(path, final)
            done.append(f"restored {final.name}, whose replacement was never completed")
        else:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path.name}")
    return done


def resumable(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A checkpoint's weights and trainer state, each checked (complete, loadable, finite); CheckpointError if not."""
    missing = [f for f in (*REQUIRED_FILES, "trainer.pt") if not (ckpt / f).is_file()]
    if missing:
        raise CheckpointError(f"{ckpt} is incomplete (missing {', '.join(missing)})")
    read_train_config(ckpt)
    read_meta(ckpt)
    weights = read_weights(ckpt)
    require_finite(weights, ckpt)
    return weights, load_trainer_state(ckpt)


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "trainer.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: this checkpoint holds weights only and cannot be resumed") from None
    except Exception as e:  # torch raises several types for a damaged archive
        raise CheckpointError(f"{path} is corrupt ({type(e).__name__}): resume from another checkpoint with "
                              "--resume PATH") from None


