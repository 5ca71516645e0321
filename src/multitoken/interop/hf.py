"""Hugging Face Llama-family folders: config.json <-> ModelConfig, tensor names, and the rotary permutation.

Supported: `LlamaForCausalLM` (Llama 1/2/3 with rope_type llama3 or linear scaling, TinyLlama, SmolLM/SmolLM2 with
tied embeddings, an explicit head_dim) and `MistralForCausalLM` (sliding_window null, or at least the context used).
Every one of them is our model with n_future = 1 and other names; an export's extra heads ride along in
`mtp_heads.safetensors` (same per-layer names) described by `mtp_heads.json`.

Rotary layout: Meta's code (and ours) rotates consecutive pairs (x0, x1), (x2, x3), ... of each attention head;
transformers rotates the two halves (x_j, x_{j + hd/2}). The same model is therefore stored with the rows of wq and
wk permuted within each head: HF row j of a head is Meta row 2j for j < hd/2, and row 2(j - hd/2) + 1 after. The
tests check the permutation by comparing logits with transformers, not by trusting the formula.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from multitoken.config import ModelConfig
from multitoken.errors import CheckpointError
from multitoken.files import read_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
HEADS_FILE = "mtp_heads.safetensors"
HEADS_CONFIG = "mtp_heads.json"
HEADS_FORMAT = "multitoken-mtp-heads"

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
# Why the Llama-shaped look-alikes are refused, so that the message can say what is missing.
UNSUPPORTED = {
    "Qwen2ForCausalLM": "its attention has biases", "Qwen3ForCausalLM": "it normalizes q and k per head",
    "GemmaForCausalLM": "it scales embeddings and offsets its norms", "Gemma2ForCausalLM": "it soft-caps logits",
    "Gemma3ForCausalLM": "it soft-caps logits and mixes sliding-window layers",
    "Phi3ForCausalLM": "it fuses q, k and v", "MixtralForCausalLM": "it is a mixture of experts",
    "Qwen2MoeForCausalLM": "it is a mixture of experts", "Qwen3MoeForCausalLM": "it is a mixture of experts",
}

# Our per-layer names -> transformers'. q and k also need their rows permuted (see the module docstring).
BLOCK_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
}
TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some older files carry; recomputed from the config


def interleaved_to_halves(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """q/k rows from Meta's layout (pairs side by side) to transformers' (pairs half a head apart)."""
    return w.reshape(n_heads, head_dim // 2, 2, -1).transpose(1, 2).reshape(w.shape)


def halves_to_interleaved(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """The inverse of `interleaved_to_halves`."""
    return w.reshape(n_heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(w.shape)


def hf_name(ours: str) -> tuple[str, str]:
    """(file, transformers name) of one of our tensor names: layers go to the model file as
    model.layers.i.*, extra heads to the heads file as mtp_heads.j.*."""
    if ours in TOP_NAMES:
        return WEIGHTS_FILE, TOP_NAMES[ours]
    group, index, rest = ours.split(".", 2)
    if group == "layers":
        return WEIGHTS_FILE, f"model.layers.{index}.{BLOCK_NAMES[rest]}"
    if group == "extra_heads":
        return HEADS_FILE, f"mtp_heads.{index}.{BLOCK_NAMES[rest]}"
    raise KeyError(ours)


def qk_rows(ours: str, config: ModelConfig) -> int | None:
    """Attention heads whose rows make up this tensor when it is a q or k projection (those get permuted)."""
    if ours.endswith("attention.wq.weight"):
        return config.n_head
    if ours.endswith("attention.wk.weight"):
        return config.kv_heads
    return None


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def _rope_settings(raw: dict, path: Path) -> tuple[float, dict | None]:
    """The rotary base and scaling (ModelConfig's form) of a config.json."""
    # transformers 5 writes rope settings under rope_parameters; older files have rope_theta / rope_scaling on top.
    rope = raw.get("rope_parameters") or {}
    theta = float(rope.get("rope_theta", raw.get("rope_theta", 10000.0)))
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"} or raw.get("rope_scaling")
    if not scaling:
        return theta, None
    scaling = dict(scaling)
    kind = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    if kind == "default":
        return theta, None
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        return theta, {"rope_type": "llama3", **{k: scaling[k] for k in keys if k in scaling}}
    if kind == "linear":
        return theta, {"rope_type": "linear", "factor": scaling.get("factor")}
    raise CheckpointError(f"{path}: rotary scaling {kind!r} is not supported (multitoken reads llama3 and linear)")


def read_config(folder: Path, max_seq_len: int | None = None) -> tuple[ModelConfig, list[str], dict]:
    """ModelConfig of a Hugging Face folder, notes for the user, and the raw config. One-line errors for anything
    this model cannot represent exactly."""
    path = folder / CONFIG_FILE
    raw = read_json(path, "download it again")
    arch = _first(raw.get("architectures")) or raw.get("model_type", "unknown")
    if arch not in ARCHITECTURES:
        why = UNSUPPORTED.get(arch)
        raise CheckpointError(f"{folder}: architecture {arch} is not supported"
                              f"{f' ({why})' if why else ''}; multitoken converts {' and '.join(ARCHITECTURES)}")
    for key, ok in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if raw.get(key, ok) != ok:
            raise CheckpointError(f"{path}: {key} is {raw[key]!r}, but multitoken's Llama layers need {ok!r}")
    notes = []
    theta, scaling = _rope_settings(raw, path)
    context = int(raw.get("max_position_embeddings", 2048))
    window = raw.get("sliding_window") if raw.get("use_sliding_window", True) else None
    if window is not None and window < context:
        # Within the window sliding-window attention is plain causal attention, so the model is exact up to it.
        notes.append(f"context limited to the sliding window of {window} tokens (config.json says "
                     f"{context}): within it, attention is exactly plain causal attention")
        context = int(window)
    if max_seq_len is not None:
        context = max_seq_len
    d_model, n_head = int(raw["hidden_size"]), int(raw["num_attention_heads"])
    head_dim = raw.get("head_dim")
    if head_dim is not None and d_model % n_head == 0 and int(head_dim) == d_model // n_head:
        head_dim = None  # the usual width: leave it implied, as our own models do
    n_kv = int(raw.get("num_key_value_heads") or n_head)
    n_future = read_heads_config(folder)
    try:
        config = ModelConfig(
            vocab_size=int(raw["vocab_size"]), d_model=d_model, n_layer=int(raw["num_hidden_layers"]) - 1 + n_future,
            n_head=n_head, n_kv_head=None if n_kv == n_head else n_kv,
            head_dim=None if head_dim is None else int(head_dim),
            n_future=n_future, max_seq_len=context, ffn_hidden=int(raw["intermediate_size"]), rope_theta=theta,
            rope_scaling=scaling, norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise CheckpointError(f"{path} lacks {e.args[0]!r}: not a complete Llama config") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} describes a model multitoken cannot build: {e}") from None
    return config, notes, raw


def read_heads_config(folder: Path) -> int:
    """n_future of a folder: 1, or 1 + the extra heads an export put beside the model."""
    path = folder / HEADS_CONFIG
    if not path.exists():
        return 1
    try:
        raw = json.loads(path.read_text())
        assert raw["format"] == HEADS_FORMAT
        n_future = int(raw["n_future"])
        assert n_future >= 1
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise CheckpointError(f"{path} is not a multitoken heads description: remove it to convert the model "
                              "without its extra heads") from None
    if n_future > 1 and not (folder / HEADS_FILE).is_file():
        raise CheckpointError(f"{path} describes {n_future - 1} extra heads but {folder / HEADS_FILE} is missing")
    return n_future


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding the model: the shards an index names, or model.safetensors."""
    index = folder / INDEX_FILE
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{index} is not a safetensors index (no weight_map): download it again") from None
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shard {missing[0]} named in {INDEX_FILE} is missing"
                                  f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: download it")
        return [folder / n for n in names]
    if (folder / WEIGHTS_FILE).is_file():
        return [folder / WEIGHTS_FILE]
    if any(folder.glob("pytorch_model*.bin")):
        raise CheckpointError(f"{folder} holds its weights only as pytorch_model*.bin (pickles, which can run code "
                              "when loaded): get the safetensors version, or re-save it with transformers' "
                              "save_pretrained(safe_serialization=True) where you trust the file")
    raise CheckpointError(f"{folder} has config.json but no {WEIGHTS_FILE} or {INDEX_FILE}: download the weights")
