"""Finetuning across n_future: start from a checkpoint with more, fewer or the same heads, optionally frozen trunk.

The paper found a 4-token model finetuned with next-token loss (n' = 1) did best on CodeContests; the
other way round, heads added to an existing model (each initialised from its head 1, the closest thing to a trained
head it has) turn a next-token model into one that can draft for self-speculative decoding. The trunk, the shared
norm and the unembedding carry over unchanged; only the list of extra heads grows or shrinks.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from multitoken.config import ModelConfig
from multitoken.errors import CheckpointError, ConfigError
from multitoken.model import MTPModel
from multitoken.checkpoint import read_train_config, read_weights, require_finite, resolve_checkpoint

_EXTRA_HEAD = re.compile(r"^(?:extra_heads|next_token_proj)\.(\d+)\.")


# What a run started from a checkpoint sets for itself; every other model setting is the checkpoint's.
RUN_OWN_FIELDS = ("n_future", "draft_vocab", "heads_read_next_token", "drafter", "drafter_layers")


def model_config_for_init(init_from: str, run: ModelConfig) -> ModelConfig:
    """The shape of a model initialised from a checkpoint: the checkpoint's, with the run's n_future heads on the
    same trunk (and its draft vocabulary size, kind of heads and drafter)."""
    saved = read_train_config(resolve_checkpoint(init_from)).model
    return dataclasses.replace(saved, n_layer=saved.n_trunk_layers + run.n_future,
                               **{name: getattr(run, name) for name in RUN_OWN_FIELDS})


def check_fixed_fields(run: ModelConfig, init_from: str) -> None:
    """For `train --init-from` on the command line: refuse a model setting the user gave (one other than the
    default) that the checkpoint overrides, since silently training another shape than the one asked for is worse
    than saying so. (A library caller's ModelConfig is a template: its shape fields give way to the checkpoint's.)
    n_layer is not checked: it follows from the checkpoint's trunk and this run's n_future."""
    shape, default = model_config_for_init(init_from, run), ModelConfig()
    for f in dataclasses.fields(ModelConfig):
        given, fixed = getattr(run, f.name), getattr(shape, f.name)
        if f.name not in (*RUN_OWN_FIELDS, "n_layer") and given != getattr(default, f.name) and given != fixed:
            raise ConfigError(f"model.{f.name} {given} differs from the checkpoint's {fixed}: with --init-from the "
                              "checkpoint fixes the model's shape; leave model.* out and set only model."
                              + ", model.".join(RUN_OWN_FIELDS))


def init_from_checkpoint(model: MTPModel, init_from: str, tokenizer) -> tuple[str, bool]:
    """Load a checkpoint's weights into model, mapping heads; returns a one-line description of what was done, and
    whether the model's draft vocabulary came with them (the same size in the checkpoint) or is still to choose."""
    from multitoken.data.tokenizer import load_tokenizer

    ckpt = resolve_checkpoint(init_from)
    saved = read_train_config(ckpt).model
    if load_tokenizer(ckpt).fingerprint != tokenizer.fingerprint:
        raise CheckpointError(f"the tokenizer of {ckpt} differs from this run's data tokenizer: finetune on data "
                              "prepared with the checkpoint's own tokenizer (it is saved in the checkpoint directory)")
    c = model.config
    if dataclasses.replace(saved, n_layer=c.n_layer, **{name: getattr(c, name) for name in RUN_OWN_FIELDS}) != c \
            or saved.n_trunk_layers != c.n_trunk_layers:
        raise CheckpointError(f"{ckpt} has a different model shape than this run: with --init_from, leave model.* "
                              "to the checkpoint and set only model." + ", model.".join(RUN_OWN_FIELDS))
    state = read_weights(ckpt, model.output.weight.device)
    require_finite(state, ckpt)
    head1 = f"layers.{saved.n_trunk_layers}."
    # Everything but the extra heads beyond the new n_future (those are dropped).
    mapped = {key: value for key, value in state.items()
              if (m := _EXTRA_HEAD.match(key)) is None or int(m.group(1)) < c.n_future - 1}
    if c.heads_read_next_token:  # projections the checkpoint lacks start at zero: heads as they were
        for j, proj in enumerate(model.next_token_proj):
            mapped.setdefault(f"next_token_proj.{j}.weight", torch.zeros_like(proj.weight))
    else:  # parallel heads from a checkpoint whose heads read the next token
        mapped = {key: value for key, value in mapped.items() if not key.startswith("next_token_proj.")}
    for j in range(saved.n_future - 1, c.n_future - 1):  # heads the checkpoint lacks start as copies of its head 1
        for key, value in state.items():
            if key.startswith(head1):
                mapped[f"extra_heads.{j}.{key[len(head1):]}"] = value.clone()
    kept_vocab = c.draft_vocab > 0 and saved.draft_vocab == c.draft_vocab
    if not c.draft_vocab:
        mapped.pop("draft_ids", None)  # this run drafts over the whole vocabulary
    elif not kept_vocab:
        mapped["draft_ids"] = model.draft_ids  # none saved, or another size: the run chooses it from its data
    same_drafter = saved.drafter == c.drafter and saved.drafter_feature_layers == c.drafter_feature_layers \
        and saved.draft_vocab == c.draft_vocab
    mapped = {key: value for key, value in mapped.items() if not key.startswith("drafter.") or same_drafter}
    fresh_drafter = c.drafter != "none" and not any(key.startswith("drafter.") for key in mapped)
    if fresh_drafter:  # a new drafter starts from its own initialisation (`init_drafter_from_base` follows)
        mapped.update({key: value for key, value in model.state_dict().items() if key.startswith("drafter.")})
    model.load_state_dict(mapped, strict=True)
    note = f"initialised from {ckpt}: n_future {saved.n_future} -> {c.n_future}"
    if fresh_drafter:
        note += f"; a new {c.drafter} drafter reading base layers {list(c.drafter_feature_layers)}"
    if c.heads_read_next_token and not saved.heads_read_next_token and c.n_future > 1:
        note += " (the heads' next-token projections start at zero: the heads begin as they were)"
    return note, kept_vocab


@torch.no_grad()
def init_drafter_from_base(model: MTPModel) -> None:
    """A new drafter's unembedding and final norm start as the base's (its rows of the draft vocabulary), as
    EAGLE-3 starts its draft head from the target's: its first guesses then read like head 1's."""
    model.drafter.output.weight.copy_(model.output.weight.index_select(0, model.drafter_ids()))
    if not model.config.norm_unit_offset:  # a (1 + w) gain is another parametrisation: the drafter's stays plain
        model.drafter.norm.weight.copy_(model.norm.weight)


def freeze_base(model: MTPModel) -> None:
    """Fix everything the source model had (embeddings, trunk, head 1, the shared norm and the unembedding, tied or
    not): only the extra heads (and the drafter) learn, so the model still says exactly what it said and its speculative output is the
    source model's greedy output."""
    model.requires_grad_(False)
    model.extra_heads.requires_grad_(True)
    if hasattr(model, "drafter"):
        model.drafter.requires_grad_(True)
    if model.config.heads_read_next_token:
        model.next_token_proj.requires_grad_(True)


def freeze_trunk(model: MTPModel) -> None:
    """Fix the input embeddings and the trunk layers; the heads, the shared norm and the unembedding still train."""
    for module in (model.tok_embeddings, *model.layers[:-1]):
        module.requires_grad_(False)
