"""Checkpoints: one self-describing directory per save, written atomically.

    <out_dir>/checkpoints/step_000500/
        model.safetensors       weights (Meta's key names), safe to load from untrusted sources
        config.yaml             the full TrainConfig, same schema as `--config` files
        tokenizer_config.json   the tokenizer, so generate/eval never need it named
        trainer.pt              optimizer state, RNG states, loop state (tensors and plain types only:
                                loaded with torch.load(weights_only=True), never as an arbitrary pickle)
        meta.json               step, tokens seen, last validation losses: readable without torch

A checkpoint is assembled in a hidden temporary directory and renamed into place in one step, so a crash at any
moment leaves either the complete checkpoint or none; leftovers of a crashed save are ignored and cleaned up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from multitoken.config import ModelConfig, TrainConfig, from_dict, to_dict
from multitoken.data.tokenizer import ByteTokenizer, load_tokenizer
from multitoken.errors import CheckpointError, MultitokenError
from multitoken.model import MTPModel

_STEP_DIR = re.compile(r"^step_(\d+)$")
REQUIRED_FILES = ("model.safetensors", "config.yaml", "tokenizer_config.json", "meta.json")


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(out_dir: str | Path, step: int, model: MTPModel | dict[str, torch.Tensor], cfg: TrainConfig,
                    tokenizer: ByteTokenizer, trainer_state: dict[str, Any], meta: dict[str, Any],
                    keep_last: int) -> Path:
    """Write one checkpoint. model: the model, or its full state dict (what a sharded run gathers on rank 0)."""
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        weights = model if isinstance(model, dict) else model.state_dict()
        state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        if cfg.model.tie_embeddings:  # one tensor under two names: safetensors stores it once (read_weights restores)
            state.pop("output.weight", None)
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt", "step": str(step)})
        (tmp / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        tokenizer.save(tmp)
        torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=1) + "\n")
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving a step (e.g. after a resume): move the old one aside, swap, then delete it
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    for leftover in root.glob(".step_*.tmp-*"):  # debris of a save that was killed midway
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its newest checkpoint). Raises a one-line error otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run directory (e.g. runs/default) or one "
                              "of its checkpoints/step_* directories")
    if (path / "model.safetensors").exists() or _STEP_DIR.match(path.name):
        ckpt = path
    else:
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"no checkpoint in {path}: expected {path}/checkpoints/step_*; train first with "
                                  f"`multitoken train --out_dir {path}`")
        ckpt = found[-1]
    missing = [f for f in REQUIRED_FILES if not (ckpt / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {ckpt} is incomplete (missing {', '.join(missing)}): pick another "
                              "checkpoint")
    return ckpt


def read_train_config(ckpt: Path) -> TrainConfig:
    try:
        return from_dict(TrainConfig, yaml.safe_load((ckpt / "config.yaml").read_text()) or {})
    except (yaml.YAMLError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{ckpt / 'config.yaml'} is corrupt ({type(e).__name__}): pick another "
                              "checkpoint") from None
    except MultitokenError as e:
        raise CheckpointError(f"{ckpt / 'config.yaml'} is invalid: {e}") from None


def read_weights(ckpt: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The full state dict in a checkpoint's model.safetensors (a tied unembedding under its own name too)."""
    path = ckpt / "model.safetensors"
    try:
        state = load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({str(e).splitlines()[0][:80]}): pick another "
                              "checkpoint") from None
    if "output.weight" not in state and "tok_embeddings.weight" in state and \
            read_train_config(ckpt).model.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> tuple[MTPModel, TrainConfig, ByteTokenizer]:
    """Model (eval mode), its training config and tokenizer from a checkpoint or run directory. The weights keep
    the dtype they were saved in unless dtype says otherwise."""
    ckpt = resolve_checkpoint(path)
    cfg = read_train_config(ckpt)
    tokenizer = load_tokenizer(ckpt)
    try:
        model = MTPModel.from_state_dict(cfg.model, read_weights(ckpt), device, dtype)
    except RuntimeError:
        raise CheckpointError(f"{ckpt / 'model.safetensors'} does not match the model in {ckpt / 'config.yaml'} "
                              "(different shapes or keys): the checkpoint is damaged or mixed with another run's "
                              "files") from None
    return model.eval(), cfg, tokenizer


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "trainer.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: this checkpoint holds weights only and cannot be resumed") from None
    except Exception as e:  # torch raises several types for a damaged archive
        raise CheckpointError(f"{path} is corrupt ({type(e).__name__}): delete {ckpt} to resume from the one "
                              "before it") from None


def model_config_of(path: str | Path) -> ModelConfig:
    return read_train_config(resolve_checkpoint(path)).model
