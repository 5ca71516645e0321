"""Reading a checkpoint for inference: finding it from what the user typed, its config checked against its
weights, and the model, config and tokenizer loaded. Every damaged file gets one line naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from multitoken.checkpoint.layout import MODEL_METADATA_KEY, REQUIRED_FILES, list_checkpoints, looks_like_checkpoint
from multitoken.config import ModelConfig, TrainConfig, from_dict, model_config_diff
from multitoken.data.tokenizer import ByteTokenizer, load_tokenizer
from multitoken.errors import CheckpointError, MultitokenError
from multitoken.files import read_json
from multitoken.model import MTPModel


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory or its checkpoints/ folder (the newest checkpoint), or a file
    inside a checkpoint (its folder). Raises a one-line error otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run directory (e.g. runs/default) or one "
                              "of its checkpoints/step_* directories")
    if path.is_file():
        if not looks_like_checkpoint(path.parent):
            raise CheckpointError(f"--ckpt {path} is a file: pass the checkpoint folder that holds a model "
                                  "(model.safetensors, config.yaml, ...) or a run directory")
        path = path.parent  # a file of a checkpoint (model.safetensors, config.yaml): its folder
    if looks_like_checkpoint(path):
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
    meta = read_json(path, "the checkpoint is corrupt; pick another one")
    if not isinstance(meta.get("step"), int):
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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
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


def model_config_of(path: str | Path) -> ModelConfig:
    return read_train_config(resolve_checkpoint(path)).model
