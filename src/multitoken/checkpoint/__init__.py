"""Checkpoints: one self-describing directory per save, written atomically (`training/checkpoint.py` writes them).

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

from multitoken.checkpoint.layout import checkpoints_dir, list_checkpoints
from multitoken.checkpoint.read import (load_checkpoint, model_config_of, nonfinite_tensors, read_meta,
                                        read_train_config, read_weights, require_finite, resolve_checkpoint,
                                        verified_train_config)

__all__ = ["checkpoints_dir", "list_checkpoints", "load_checkpoint", "model_config_of", "nonfinite_tensors",
           "read_meta", "read_train_config", "read_weights", "require_finite", "resolve_checkpoint",
           "verified_train_config"]
