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
from multitoken.interop import families

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
HEADS_FILE = "mtp_heads.safetensors"
HEADS_CONFIG = "mtp_heads.json"
HEADS_FORMAT = "multitoken-mtp-heads"

# Why the look-alikes that stay unsupported are refused, so that the message can say what is missing.
UNSUPPORTED = {
    "GemmaForCausalLM": "Gemma 1: use Gemma 3", "Gemma2ForCausalLM": "it soft-caps attention and logits",
    "Gemma3ForConditionalGeneration": "it is the multimodal model: convert its text-only sibling (Gemma3ForCausalLM)",
    "Phi3ForCausalLM": "it fuses q, k and v", "MixtralForCausalLM": "it is a mixture of experts",
    "Qwen2MoeForCausalLM": "it is a mixture of experts", "Qwen3MoeForCausalLM": "it is a mixture of experts",
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


def hf_name(ours: str, config: ModelConfig) -> tuple[str, str]:
    """(file, transformers name) of one of our tensor names: layers go to the model file as
    model.layers.i.*, extra heads to the heads file as mtp_heads.j.*."""
    if ours in TOP_NAMES:
        return WEIGHTS_FILE, TOP_NAMES[ours]
    group, index, rest = ours.split(".", 2)
    names = families.block_names(config)
    if group == "layers":
        return WEIGHTS_FILE, f"model.layers.{index}.{names[rest]}"
    if group == "extra_heads":
        return HEADS_FILE, f"mtp_heads.{index}.{names[rest]}"
    raise KeyError(ours)


def qk_rows(ours: str, config: ModelConfig) -> int | None:
    """Attention heads whose rows make up this tensor when it lies along a q or k head's width (those get
    permuted): the projections and their biases, and the per-head norms (one head's width, shared)."""
    if ours.endswith(("attention.wq.weight", "attention.wq.bias")):
        return config.n_head
    if ours.endswith(("attention.wk.weight", "attention.wk.bias")):
        return config.kv_heads
    if ours.endswith(("attention.q_norm.weight", "attention.k_norm.weight")):
        return 1
    return None


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def _rope_settings(raw: dict, path: Path, family: families.Family) -> tuple[float, dict | None, float | None]:
    """The rotary base and scaling (ModelConfig's form) of a config.json, and the window layers' own base (Gemma 3)
    or None."""
    gemma = family.name == "gemma3"
    # transformers 5 writes rope settings under rope_parameters (per layer type for Gemma 3); older files have
    # rope_theta / rope_scaling (and Gemma 3's rope_local_base_freq) on top.
    rope = raw.get("rope_parameters") or {}
    local_theta = raw.get("rope_local_base_freq", 10000.0 if gemma else None)
    if "full_attention" in rope or "sliding_attention" in rope:
        local = rope.get("sliding_attention") or {}
        if local.get("rope_type", "default") != "default":
            raise CheckpointError(f"{path}: the window layers' rotary scaling {local['rope_type']!r} is not supported")
        local_theta = local.get("rope_theta", local_theta)
        rope = rope.get("full_attention") or {}
    theta = float(rope.get("rope_theta", raw.get("rope_theta", 1e6 if gemma else 10000.0)))
    local_theta = None if local_theta is None or not gemma else float(local_theta)
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"} or raw.get("rope_scaling")
    if not scaling:
        return theta, None, local_theta
    scaling = dict(scaling)
    kind = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    if kind == "default":
        return theta, None, local_theta
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        return theta, {"rope_type": "llama3", **{k: scaling[k] for k in keys if k in scaling}}, local_theta
    if kind == "linear":
        return theta, {"rope_type": "linear", "factor": scaling.get("factor")}, local_theta
    raise CheckpointError(f"{path}: rotary scaling {kind!r} is not supported (multitoken reads llama3 and linear)")


def _windows(raw: dict, family: families.Family, n_layers: int) -> tuple[int | None, list[int] | None]:
    """(window, the layers that use it; None: all of them) of a config.json, or (None, None) for none."""
    window = raw.get("sliding_window")
    if family.name in ("qwen2", "qwen3") and not raw.get("use_sliding_window", False):
        window = None  # Qwen ships a sliding_window value that its own code ignores unless this is set
    if window is None or family.name in ("llama", "mistral"):
        return (None if window is None else int(window)), None
    types = raw.get("layer_types")
    if types is None and family.name == "gemma3":  # older files: every pattern-th layer global
        pattern = int(raw.get("sliding_window_pattern", raw.get("_sliding_window_pattern", 6)))
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    elif types is None:  # Qwen: the layers from max_window_layers on
        first = int(raw.get("max_window_layers", n_layers))
        types = ["sliding_attention" if i >= first else "full_attention" for i in range(n_layers)]
    sliding = [i for i, kind in enumerate(types[:n_layers]) if kind == "sliding_attention"]
    if not sliding:
        return None, None
    return int(window), None if len(sliding) == n_layers else sliding


def _family(folder: Path, raw: dict) -> families.Family:
    """The family config.json names: its architectures, or (as transformers reads a config without them) its
    model_type."""
    arch = _first(raw.get("architectures"))
    if arch is None:
        family = families.BY_HF_MODEL_TYPE.get(raw.get("model_type"))
        if family is None:
            known = ", ".join(f.hf_model_type for f in families.FAMILIES)
            raise CheckpointError(f"{folder / CONFIG_FILE} names no architecture (\"architectures\") and its "
                                  f"model_type is {raw.get('model_type')!r}: add e.g. \"architectures\": "
                                  f"[\"LlamaForCausalLM\"]; multitoken converts model types {known}")
        return family
    family = families.BY_HF_ARCHITECTURE.get(arch)
    if family is None:
        why = UNSUPPORTED.get(arch)
        known = ", ".join(f.hf_architecture for f in families.FAMILIES)
        raise CheckpointError(f"{folder}: architecture {arch} is not supported{f' ({why})' if why else ''}; "
                              f"multitoken converts {known}")
    return family


def read_config(folder: Path, max_seq_len: int | None = None) -> tuple[ModelConfig, list[str], dict]:
    """ModelConfig of a Hugging Face folder, notes for the user, and the raw config. One-line errors for anything
    this model cannot represent exactly."""
    path = folder / CONFIG_FILE
    raw = read_json(path, "download it again")
    family = _family(folder, raw)
    arch = family.hf_architecture
    activation = "gelu_tanh" if family.name == "gemma3" else "silu"
    act = raw.get("hidden_activation") or raw.get("hidden_act") or "silu"
    if act not in {"silu": ("silu",), "gelu_tanh": ("gelu_pytorch_tanh", "gelu_tanh")}[activation]:
        raise CheckpointError(f"{path}: the activation is {act!r}, but {arch}'s block in multitoken uses "
                              f"{activation}")
    biased = family.name != "qwen2" and raw.get("attention_bias", False)  # these also bias o_proj, which ours lacks
    for key, value in (("attention_bias", biased), ("mlp_bias", raw.get("mlp_bias", False)),
                       ("final_logit_softcapping", raw.get("final_logit_softcapping")),
                       ("attn_logit_softcapping", raw.get("attn_logit_softcapping")),
                       ("use_bidirectional_attention", raw.get("use_bidirectional_attention"))):
        if value:
            raise CheckpointError(f"{path}: {key} is {raw[key]!r}, which multitoken's {arch} block does not have")
    notes = []
    theta, scaling, local_theta = _rope_settings(raw, path, family)
    n_layers = int(raw.get("num_hidden_layers", 0))
    window, sliding_layers = _windows(raw, family, n_layers)
    context = max_seq_len or int(raw.get("max_position_embeddings", 2048))
    if window is not None and window >= context and local_theta is None:
        window = sliding_layers = None  # within the context a window that long is plain causal attention
    d_model, n_head = int(raw["hidden_size"]), int(raw["num_attention_heads"])
    head_dim = raw.get("head_dim")
    width = int(head_dim) if head_dim is not None else d_model // n_head
    if head_dim is not None and d_model % n_head == 0 and int(head_dim) == d_model // n_head:
        head_dim = None  # the usual width: leave it implied, as our own models do
    scalar = raw.get("query_pre_attn_scalar") if family.name == "gemma3" else None
    attention_scale = None if scalar is None or float(scalar) == width else float(scalar) ** -0.5
    n_kv = int(raw.get("num_key_value_heads") or n_head)
    n_future = read_heads_config(folder)
    try:
        config = families.configure(
            family,
            vocab_size=int(raw["vocab_size"]), d_model=d_model, n_layer=n_layers - 1 + n_future,
            n_head=n_head, n_kv_head=None if n_kv == n_head else n_kv,
            head_dim=None if head_dim is None else int(head_dim),
            n_future=n_future, max_seq_len=context, ffn_hidden=int(raw["intermediate_size"]), rope_theta=theta,
            rope_scaling=scaling, norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(raw.get("tie_word_embeddings", family.name == "gemma3")),
            attention_scale=attention_scale, sliding_window=window, sliding_layers=sliding_layers,
            rope_local_theta=local_theta if window is not None else None)
    except KeyError as e:
        raise CheckpointError(f"{path} lacks {e.args[0]!r}: not a complete {arch} config") from None
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
