"""The model families multitoken reads and writes, as what they switch on in the one model (`ModelConfig`), and
how each one's files spell it: transformers' class and names, llama.cpp's architecture and its storage quirks.

A family is data, not code: the model has one block with switches (litgpt's way), so adding a family here means
saying which switches it sets and how its tensors are named, never a new model class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from multitoken.config import ModelConfig
from multitoken.errors import CheckpointError

GEMMA_BLOCK = dict(qk_norm=True, norm_unit_offset=True, sandwich_norm=True, scale_embeddings=True,
                   activation="gelu_tanh")


@dataclass(frozen=True)
class Family:
    name: str
    hf_architecture: str  # transformers' class
    hf_model_type: str
    switches: dict = field(default_factory=dict)  # the ModelConfig fields it sets (the rest stay a Llama's)
    gguf_architecture: str | None = None  # llama.cpp's general.architecture
    # llama.cpp's converter permutes q/k rows to Meta's interleaved pairs only for the families its kernels rotate
    # that way (Llama); the others (NEOX rotary) keep transformers' rotate-half rows, which are permuted here.
    gguf_rotate_half: bool = False
    gguf_norm_shift: float = 0.0  # llama.cpp stores Gemma's norm gains as 1 + w: subtract this when reading


FAMILIES = (
    Family("llama", "LlamaForCausalLM", "llama", gguf_architecture="llama"),
    Family("mistral", "MistralForCausalLM", "mistral"),
    Family("qwen2", "Qwen2ForCausalLM", "qwen2", dict(qkv_bias=True), "qwen2", gguf_rotate_half=True),
    Family("qwen3", "Qwen3ForCausalLM", "qwen3", dict(qk_norm=True), "qwen3", gguf_rotate_half=True),
    Family("gemma3", "Gemma3ForCausalLM", "gemma3_text", GEMMA_BLOCK, "gemma3", gguf_rotate_half=True,
           gguf_norm_shift=1.0),
)
FAMILY = {f.name: f for f in FAMILIES}
BY_HF_ARCHITECTURE = {f.hf_architecture: f for f in FAMILIES}
BY_HF_MODEL_TYPE = {f.hf_model_type: f for f in FAMILIES}
BY_GGUF_ARCHITECTURE = {f.gguf_architecture: f for f in FAMILIES if f.gguf_architecture}

# Our per-layer names -> transformers'. q and k rows (and their biases and norms) are permuted as well (hf.py).
BLOCK_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
    "attention.wq.bias": "self_attn.q_proj.bias", "attention.wk.bias": "self_attn.k_proj.bias",
    "attention.wv.bias": "self_attn.v_proj.bias",
    "attention.q_norm.weight": "self_attn.q_norm.weight", "attention.k_norm.weight": "self_attn.k_norm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
}
# Gemma's four norms: its post_attention_layernorm is the attention output's norm, not the feed-forward's input's.
SANDWICH_NAMES = {
    "attention_norm.weight": "input_layernorm.weight", "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight", "post_ffn_norm.weight": "post_feedforward_layernorm.weight",
}
# llama.cpp's per-layer names (blk.N.<name>.weight / .bias) -> ours.
GGUF_BLOCK_NAMES = {
    "attn_q": "attention.wq", "attn_k": "attention.wk", "attn_v": "attention.wv", "attn_output": "attention.wo",
    "attn_q_norm": "attention.q_norm", "attn_k_norm": "attention.k_norm",
    "ffn_gate": "feed_forward.w1", "ffn_up": "feed_forward.w3", "ffn_down": "feed_forward.w2",
    "attn_norm": "attention_norm", "ffn_norm": "ffn_norm",
    "post_attention_norm": "post_attention_norm", "post_ffw_norm": "post_ffn_norm",
}


def block_names(config: ModelConfig) -> dict[str, str]:
    """Our per-layer names -> transformers' for this config's block."""
    return {**BLOCK_NAMES, **SANDWICH_NAMES} if config.sandwich_norm else BLOCK_NAMES


def configure(family: Family, **values) -> ModelConfig:
    """A ModelConfig with the family's switches on."""
    return ModelConfig(**{**family.switches, **values})


def family_of(config: ModelConfig) -> Family:
    """The family whose transformers class computes exactly this config, for export; one line when none does."""
    if all(getattr(config, k) == v for k, v in GEMMA_BLOCK.items()):
        return FAMILY["gemma3"]
    gemma_only = {k: v for k, v in config.block_switches().items() if k in GEMMA_BLOCK and k != "qk_norm"}
    if gemma_only:
        raise CheckpointError(f"no transformers class has this combination of block switches ({gemma_only}, "
                              f"qk_norm {config.qk_norm}): export --format hf writes Llama, Mistral, Qwen2, Qwen3 and "
                              "Gemma 3 blocks")
    if config.rope_local_theta is not None:
        raise CheckpointError("only Gemma 3 gives its window layers their own rotary base: export --format hf cannot "
                              "write this model")
    if config.qk_norm:
        return FAMILY["qwen3"]
    if config.qkv_bias:
        return FAMILY["qwen2"]
    if config.sliding_window is None:
        return FAMILY["llama"]
    if config.sliding_layers is None:
        return FAMILY["mistral"]  # every layer windowed
    raise CheckpointError("no transformers class has a Llama block with window layers mixed with global ones: "
                          "export --format hf cannot write this model")
