"""A checkpoint's drafter out as the draft files the engines load (EAGLE-3's layout; the arithmetic, as both engines
compute it, is in docs/engines.md).

- `eagle3`: a folder vLLM loads as `speculative_config={"method": "eagle3", "model": DIR}` (its
  `LlamaForCausalLMEagle3`, the layout of EAGLE-3's own releases and the speculators library's): `config.json` with
  the draft vocabulary, the target's hidden size and the three feature layers, `model.safetensors` with `fc`,
  `midlayer.*`, `norm`, `lm_head`, and with a draft vocabulary `d2t` (each draft id's offset to its target id) and
  `t2d`. q and k rows in transformers' rotate-half layout. No embeddings: the engines share the target's.
- `eagle3-gguf`: one GGUF file llama.cpp loads with `--spec-type draft-eagle3`: `general.architecture = eagle3`,
  q and k rows in llama.cpp's interleaved layout (ours), with a draft vocabulary `d2t` as absolute target ids, the
  feature layers as `eagle3.target_layers`; the tokenizer is copied from the target's GGUF, since llama.cpp refuses
  a draft whose vocabulary is not its target's.

The target itself goes out as before (`--format hf`, or the GGUF the user runs).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from multitoken.config import ModelConfig
from multitoken.errors import CheckpointError
from multitoken.files import check_new_folder, new_folder
from multitoken.interop.hf import interleaved_to_halves
from multitoken.interop.tensors import LazyTensor

# Our drafter's tensors -> the engines' names (vLLM / EAGLE-3 releases, then llama.cpp's GGUF).
NAMES = {
    "fc.weight": ("fc.weight", "fc.weight"),
    "input_norm.weight": ("midlayer.input_layernorm.weight", "blk.0.attn_norm.weight"),
    "hidden_norm.weight": ("midlayer.hidden_norm.weight", "blk.0.attn_norm_2.weight"),
    "attention.wq.weight": ("midlayer.self_attn.q_proj.weight", "blk.0.attn_q.weight"),
    "attention.wk.weight": ("midlayer.self_attn.k_proj.weight", "blk.0.attn_k.weight"),
    "attention.wv.weight": ("midlayer.self_attn.v_proj.weight", "blk.0.attn_v.weight"),
    "attention.wo.weight": ("midlayer.self_attn.o_proj.weight", "blk.0.attn_output.weight"),
    "ffn_norm.weight": ("midlayer.post_attention_layernorm.weight", "blk.0.ffn_norm.weight"),
    "feed_forward.w1.weight": ("midlayer.mlp.gate_proj.weight", "blk.0.ffn_gate.weight"),
    "feed_forward.w3.weight": ("midlayer.mlp.up_proj.weight", "blk.0.ffn_up.weight"),
    "feed_forward.w2.weight": ("midlayer.mlp.down_proj.weight", "blk.0.ffn_down.weight"),
    "norm.weight": ("norm.weight", "output_norm.weight"),
    "output.weight": ("lm_head.weight", "output.weight"),
}
ARCHITECTURE = "LlamaForCausalLMEagle3"
# The target families each engine runs an EAGLE-3 draft beside (read from their sources: vLLM 0.32's models that
# implement SupportsEagle3; llama.cpp's, vendored in llama-cpp-python 0.3.36, whose graphs expose layer inputs).
ENGINE_TARGETS = {"eagle3": ("vLLM", ("llama", "mistral", "qwen2", "qwen3")),
                  "eagle3-gguf": ("llama.cpp", ("llama", "mistral", "qwen3"))}


def engine_note(config: ModelConfig, fmt: str) -> str | None:
    """A line for the user when the format's engine does not run drafts beside this family of target."""
    from multitoken.interop.families import family_of

    engine, families = ENGINE_TARGETS[fmt]
    try:
        family = family_of(config).name
    except CheckpointError:
        family = "this"
    if family in families:
        return None
    return (f"note: {engine} runs EAGLE-3 drafts beside {', '.join(families)} targets, not {family} ones (yet): the "
            "draft is written, and multitoken decodes with it")


def drafter_state(tensors: dict[str, LazyTensor], config: ModelConfig, where: str) -> dict[str, torch.Tensor]:
    """The drafter's tensors (our names, without `drafter.`) and `draft_ids` (every token without a draft
    vocabulary), from a checkpoint's tensors; one line when the checkpoint has no drafter."""
    if config.drafter != "eagle3":
        raise CheckpointError(f"{where} has no drafter to export: train one with multitoken train --init-from CKPT "
                              "--freeze base --model.drafter eagle3, or export the model itself with --format hf")
    state = {name[len("drafter."):]: lazy.load() for name, lazy in tensors.items() if name.startswith("drafter.")}
    ids = tensors["draft_ids"].load() if config.draft_vocab else torch.arange(config.vocab_size)
    return {**state, "draft_ids": ids.long()}


def eagle3_config(config: ModelConfig, dtype: torch.dtype) -> dict:
    """config.json of the draft folder: a one-layer Llama with the draft vocabulary and the target's features."""
    draft_vocab = config.draft_vocab or config.vocab_size
    layers = list(config.drafter_feature_layers)
    return {
        "architectures": [ARCHITECTURE], "model_type": "llama", "num_hidden_layers": 1,
        "hidden_size": config.d_model, "intermediate_size": config.ffn_dim, "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads, "head_dim": config.head_size, "hidden_act": "silu",
        "rms_norm_eps": config.norm_eps, "rope_theta": config.rope_theta, "rope_scaling": config.rope_scaling,
        "max_position_embeddings": config.max_seq_len, "vocab_size": config.vocab_size,
        "draft_vocab_size": draft_vocab, "target_hidden_size": config.d_model, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": str(dtype).removeprefix("torch."),
        "norm_before_residual": False, "norm_before_fc": False,
        # vLLM reads the layers from eagle_config; llama.cpp's converter from the top level.
        "eagle_aux_hidden_state_layer_ids": layers,
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": layers, "use_aux_hidden_state": True},
    }


def folder_tensors(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The draft folder's tensors: our rows permuted to rotate-half for q and k, d2t as offsets, t2d as a mask."""
    out = {}
    for ours, (name, _) in NAMES.items():
        w = state[ours]
        if ours == "attention.wq.weight":
            w = interleaved_to_halves(w, config.n_head, config.head_size)
        elif ours == "attention.wk.weight":
            w = interleaved_to_halves(w, config.kv_heads, config.head_size)
        out[name] = w.contiguous()
    if config.draft_vocab:  # vLLM has no place for the maps of a draft over every token (it refuses them)
        ids = state["draft_ids"]
        out["d2t"] = ids - torch.arange(len(ids))
        out["t2d"] = torch.zeros(config.vocab_size, dtype=torch.bool).index_fill(0, ids, True)
    return out


def write_folder(state: dict[str, torch.Tensor], config: ModelConfig, out: Path) -> Path:
    """The draft folder (a drafter is one layer: it is written from memory)."""
    from safetensors.torch import save_file

    check_new_folder(out)
    with new_folder(out) as tmp:
        save_file(folder_tensors(state, config), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config_json = eagle3_config(config, state["fc.weight"].dtype)
        (tmp / "config.json").write_text(json.dumps(config_json, indent=1) + "\n")
    return out


def write_gguf(state: dict[str, torch.Tensor], config: ModelConfig, out: Path, target: Path) -> Path:
    """The llama.cpp draft file, its tokenizer copied from the target's GGUF (checked to be this model's target:
    the same vocabulary size, width and depth)."""
    import gguf

    from multitoken.interop.gguf_file import open_reader

    reader = open_reader(target)
    _check_target(reader, config, target)
    if out.exists():
        raise CheckpointError(f"{out} already exists: choose a new file name (nothing was overwritten)")
    writer = gguf.GGUFWriter(str(out) + ".tmp", "eagle3")
    writer.add_block_count(1)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.d_model)
    writer.add_feed_forward_length(config.ffn_dim)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_key_length(config.head_size)
    writer.add_value_length(config.head_size)
    writer.add_rope_dimension_count(config.head_size)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_array("eagle3.target_layers", list(config.drafter_feature_layers))  # INT32, as the engine reads
    writer.add_uint32("eagle3.target_hidden_size", config.d_model)
    writer.add_bool("eagle3.norm_before_residual", False)
    writer.add_bool("eagle3.norm_before_fc", False)
    _copy_tokenizer(reader, writer)
    for ours, (_, name) in NAMES.items():  # q/k rows stay interleaved: llama.cpp's layout is ours
        writer.add_tensor(name, state[ours].float().numpy())
    if config.rope_scaling is not None:
        writer.add_tensor("rope_freqs.weight", _rope_factors(config).numpy())
    if config.draft_vocab:  # without it llama.cpp drafts over the target's whole vocabulary
        writer.add_tensor("d2t", state["draft_ids"].numpy(), raw_dtype=gguf.GGMLQuantizationType.I64)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    Path(str(out) + ".tmp").replace(out)
    return out


def _check_target(reader, config: ModelConfig, target: Path) -> None:
    from multitoken.interop.gguf_file import field_value

    arch = field_value(reader, "general.architecture")
    found = (field_value(reader, f"{arch}.embedding_length"), field_value(reader, f"{arch}.block_count"),
             len(field_value(reader, "tokenizer.ggml.tokens") or []))
    wanted = (config.d_model, config.n_trunk_layers + 1, config.vocab_size)
    if found != wanted:
        raise CheckpointError(f"{target} is not this drafter's target: it has width {found[0]}, {found[1]} layers "
                              f"and {found[2]} tokens, the checkpoint's base {wanted[0]}, {wanted[1]} and {wanted[2]}: "
                              "give the GGUF of the model the drafter was trained on")


def _copy_tokenizer(reader, writer) -> None:
    """Every tokenizer.* field of the target, as it is: llama.cpp compares draft and target vocabularies."""
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if len(field.types) > 1 else None
        writer.add_key_value(key, field.contents(), vtype, sub_type)


def _rope_factors(config: ModelConfig) -> torch.Tensor:
    """llama.cpp's rope_freqs: each frequency's divisor under the config's scaling (Llama 3.1's rule)."""
    from multitoken.model.layers import rope_frequencies

    unscaled = rope_frequencies(dataclasses.replace(config, rope_scaling=None))
    return unscaled / rope_frequencies(config)
