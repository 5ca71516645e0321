"""Checkpoints: one self-describing directory per save, written atomically.

    <out_dir>/checkpoints/step_000500/
        model.safetensors       weights (Meta's key names), safe to load from untrusted sources
        config.yaml             the full TrainConfig, same schema as `--config` files
        tokenizer_config.json   the tokenizer, so generate/eval never need it named
        trainer.pt              optimizer state, RNG states, loop state (tensors and plain types only:
                                loaded with torch.load(weights_only=True), never as an arbitrary pickle)
        meta.json               step, tokens seen, last validation losses: readable without torch

A checkpoint is assembled in a hidden temporary directory and renamed into place in one step, so a crash at any
moment leaves either the complete checkpoint or none. Deleting an old checkpoint is the same move backwards: it is
renamed to a hidden name first (one step), then removed, so a kill mid-deletion never leaves a half-deleted `step_N`
that still looks like a checkpoint. `sweep_debris` clears what a killed save or deletion left behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from multitoken.config import ModelConfig, TrainConfig, from_dict, model_config_diff, to_dict
from multitoken.data.tokenizer import ByteTokenizer, load_tokenizer
from multitoken.errors import CheckpointError, MultitokenError, TrainingError
from multitoken.model import MTPModel

STEP_DIR = re.compile(r"^step_(\d+)$")
# Hidden names of a save in progress (tmp), of a checkpoint being replaced (old) or deleted (deleting).
_DEBRIS = re.compile(r"^\.(step_\d+)\.(tmp|old|deleting)-.+$")
REQUIRED_FILES = ("model.safetensors", "config.yaml", "tokenizer_config.json", "meta.json")
MODEL_METADATA_KEY = "multitoken.model"  # the model config, saved inside model.safetensors beside the weights
LOW_SPACE_BYTES = 1 << 20  # a write that failed with less than this left free failed for want of space


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
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
        save_file(state, tmp / "model.safetensors", metadata=weights_metadata(cfg.model, step=str(step)))
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
    except BaseException as e:
        disk_full = out_of_space(e, root)
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full:
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


def _looks_like_checkpoint(path: Path) -> bool:
    """A checkpoint folder, complete or not: named like one, or holding one of its own files (a run directory holds a
    config.yaml too, and its checkpoints/ folder)."""
    if (path / "checkpoints").is_dir():
        return False
    return STEP_DIR.match(path.name) is not None or any((path / f).is_file() for f in REQUIRED_FILES
                                                        if f != "config.yaml")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory or its checkpoints/ folder (the newest checkpoint), or a file
    inside a checkpoint (its folder). Raises a one-line error otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run directory (e.g. runs/default) or one "
                              "of its checkpoints/step_* directories")
    if path.is_file():
        if not _looks_like_checkpoint(path.parent):
            raise CheckpointError(f"--ckpt {path} is a file: pass the checkpoint folder that holds a model "
                                  "(model.safetensors, config.yaml, ...) or a run directory")
        path = path.parent  # a file of a checkpoint (model.safetensors, config.yaml): its folder
    if _looks_like_checkpoint(path):
        ckpt = path
    else:
        # A run directory (RUN/checkpoints/step_*), or its checkpoints folder itself (RUN/checkpoints/step_*).
        found = list_checkpoints(path) or (list_checkpoints(path.parent) if path.name == "checkpoints" else [])
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
        values = yaml.safe_load((ckpt / "config.yaml").read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{ckpt / 'config.yaml'} is corrupt ({type(e).__name__}): pick another "
                              "checkpoint") from None
    if values is None:
        raise CheckpointError(f"{ckpt / 'config.yaml'} is empty: the checkpoint is damaged; restore the file or pick "
                              "another checkpoint")
    try:
        return from_dict(TrainConfig, values)
    except (TypeError, AttributeError) as e:
        raise CheckpointError(f"{ckpt / 'config.yaml'} is corrupt ({type(e).__name__}): pick another "
                              "checkpoint") from None
    except MultitokenError as e:
        raise CheckpointError(f"{ckpt / 'config.yaml'} is invalid: {e}") from None


def _weights_header(ckpt: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Every tensor's shape and the metadata in a checkpoint's model.safetensors, read from its header only."""
    path = ckpt / "model.safetensors"
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({str(e).splitlines()[0][:80]}): pick another "
                              "checkpoint") from None


def verified_train_config(ckpt: Path) -> TrainConfig:
    """config.yaml, checked against the weights it describes: the weights are the truth. The model config saved
    inside model.safetensors must equal config.yaml's (checkpoints from before it was saved there skip this), and
    every tensor must have the shape config.yaml implies. An edited config.yaml, or one copied from another run,
    would otherwise mislabel parameter counts or let decoding run past the trained context."""
    cfg = read_train_config(ckpt)
    weights = ckpt / "model.safetensors"
    shapes, metadata = _weights_header(ckpt)
    if MODEL_METADATA_KEY in metadata:
        try:
            saved = from_dict(ModelConfig, json.loads(metadata[MODEL_METADATA_KEY]))
        except (ValueError, TypeError, AttributeError, MultitokenError):
            raise CheckpointError(f"{weights} has a damaged model header: pick another checkpoint") from None
        if saved != cfg.model:
            raise CheckpointError(f"{ckpt / 'config.yaml'} does not describe the weights in {weights} "
                                  f"({', '.join(model_config_diff(saved, cfg.model))}; the left side was saved with the "
                                  "weights): the config was edited or comes from another run; restore it")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in MTPModel(cfg.model).state_dict().items()}
    if cfg.model.tie_embeddings:  # stored once, under the input embedding's name
        expected.pop("output.weight", None)
        shapes.pop("output.weight", None)
    if expected != shapes:
        wrong = sorted(k for k in expected.keys() | shapes.keys() if expected.get(k) != shapes.get(k))
        k = wrong[0]
        raise CheckpointError(f"{ckpt / 'config.yaml'} does not describe the weights in {weights} ({len(wrong)} "
                              f"tensors differ, e.g. {k}: {list(shapes[k]) if k in shapes else 'absent'} in the "
                              f"weights, {list(expected[k]) if k in expected else 'absent'} by the config): the config "
                              "was edited or comes from another run")
    return cfg


def read_meta(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's meta.json (step, tokens seen, last validation): a one-line error naming the file if damaged."""
    path = ckpt / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete, pick another one") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt ({type(e).__name__}): the checkpoint is damaged, pick another "
                              "one") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{path} is corrupt (no step): the checkpoint is damaged, pick another one")
    return meta


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
    cfg = verified_train_config(ckpt)
    tokenizer = load_tokenizer(ckpt)
    weights = read_weights(ckpt)
    require_finite(weights, ckpt)
    try:
        model = MTPModel.from_state_dict(cfg.model, weights, device, dtype)
    except RuntimeError:
        raise CheckpointError(f"{ckpt / 'model.safetensors'} does not match the model in {ckpt / 'config.yaml'} "
                              "(different shapes or keys): the checkpoint is damaged or mixed with another run's "
                              "files") from None
    return model.eval(), cfg, tokenizer


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def require_finite(state: dict[str, torch.Tensor], ckpt: Path) -> None:
    """Refuse weights of a diverged run: decoding them prints garbage (NUL bytes), evaluating them prints NaN."""
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"{ckpt} holds non-finite weights ({len(bad)} tensors with NaN or infinity, e.g. "
                              f"{bad[0]}): its run diverged; use an earlier checkpoint, or retrain with a lower "
                              "optim.lr")


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


def model_config_of(path: str | Path) -> ModelConfig:
    return read_train_config(resolve_checkpoint(path)).model
