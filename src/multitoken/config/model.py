"""The model's shape (`ModelConfig`): sizes, the families' block switches, rope scaling, the drafter's layers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from multitoken.config.checks import check_types, require

@dataclass
class ModelConfig:
    """Model shape. Meta's convention: n_layer counts trunk and head layers, so n_future never changes the size."""

    vocab_size: int = 256
    """Vocabulary size (256 for the byte-level tokenizer)."""
    d_model: int = 128
    """Width of the residual stream."""
    n_layer: int = 6
    """All transformer layers: the trunk has n_layer - n_future, each of the n_future heads is one more."""
    n_head: int = 4
    """Attention heads per layer."""
    n_kv_head: int | None = None
    """Key/value heads for grouped-query attention; null means n_head (plain multi-head attention)."""
    head_dim: int | None = None
    """Width of each attention head; null means d_model / n_head (some imported models set it apart)."""
    n_future: int = 4
    """Output heads: head i predicts token t+i. 1 is an ordinary next-token language model."""
    draft_vocab: int = 0
    """The extra heads draft over only this many tokens, the ones most frequent in the training data (their ids are
    saved with the weights, `draft_ids`); 0 means over the whole vocabulary. Head 1 still scores every token, so the
    output does not change; a draft then reads that share of the unembedding instead of all of it, and with the
    unembedding frozen (`--freeze base`) the extra heads train over these tokens alone, for that share of the cost."""
    heads_read_next_token: bool = False
    """Each extra head also reads the token that follows its position, embedded and projected into its input (a
    learned d_model x d_model matrix per head, zero at the start): a draft of token t+2 then knows token t+1, which
    head 1 has just chosen. When training that token is the text's; when decoding, head 1's choice. Drafts agree
    with head 1 more often (SmolLM2: +2.3 points of top-1 at t+2 and +0.04 held-out tokens per forward over the same
    training; z one layer below head 1 already carries most of that token); head 1 is unchanged, so the output is
    too. Off: the paper's parallel heads, which read z alone."""
    drafter: Literal["none", "eagle3"] = "none"
    """A sequential draft module beside the heads. 'eagle3': EAGLE-3's layout (Li et al. 2025), the draft format
    vLLM, SGLang and llama.cpp run: it reads three base layers' inputs (`drafter_layers`) and the next token, one
    Llama decoder layer and its own unembedding over the draft vocabulary make a guess, and each further guess reads
    the one before and the module's own state, so the second guess knows the first. 'none': the heads alone."""
    drafter_layers: list[int] | None = None
    """The base layers whose inputs the drafter reads (0: the embeddings; n_layer - n_future: the trunk's output):
    exactly three, distinct, each below the base model's n_layer - n_future + 1 layers, as the engines require.
    null: EAGLE-3's (2, L // 2, L - 3) for a base of L >= 7 layers, spread over fewer otherwise."""
    max_seq_len: int = 256
    """Context length in tokens: training windows and the largest prompt + generation."""
    ffn_hidden: int | None = None
    """SwiGLU hidden width; null means Llama's rule: 8/3 * d_model rounded up to a multiple of 256."""
    rope_theta: float = 10000.0
    """Base of the rotary position embedding frequencies."""
    rope_scaling: dict[str, float | str] | None = None
    """Rotary frequency scaling of imported long-context models: {rope_type: llama3, factor, low_freq_factor,
    high_freq_factor, original_max_position_embeddings} (Llama 3.1+), or {rope_type: linear, factor}; null for none."""
    tie_embeddings: bool = False
    """Share one matrix between the input embedding and the unembedding (SmolLM, Llama 3.2 1B/3B); the paper's
    models keep them apart."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Standard deviation of the normal weight initialisation."""
    # The switches below describe other model families' blocks (all off: a Llama). Extra heads copy head 1's block,
    # so every head has the family's block too.
    qkv_bias: bool = False
    """Biases on the q, k and v projections (Qwen2 / Qwen2.5)."""
    qk_norm: bool = False
    """RMSNorm over each attention head's q and k before rotary (Qwen3, Gemma 3)."""
    norm_unit_offset: bool = False
    """RMSNorm gains stored as offsets from 1, x * (1 + w), applied in fp32 (Gemma)."""
    sandwich_norm: bool = False
    """Norms on the attention and feed-forward outputs as well as on their inputs (Gemma 2 / 3)."""
    scale_embeddings: bool = False
    """Multiply the input embeddings by sqrt(d_model) (Gemma)."""
    activation: Literal["silu", "gelu_tanh"] = "silu"
    """The gated feed-forward's activation: 'silu' (SwiGLU, Llama) or 'gelu_tanh' (GeGLU with the tanh GELU, Gemma)."""
    attention_scale: float | None = None
    """Attention's query scale; null means 1 / sqrt(head width) (Gemma 3 sets it from query_pre_attn_scalar)."""
    sliding_window: int | None = None
    """Sliding-window attention: a window layer's token attends to the last sliding_window positions, itself
    included; null for none."""
    sliding_layers: list[int] | None = None
    """Which of `layers` (trunk layers and head 1, 0-based) use the window; null with a window means all of them.
    Extra heads use head 1's kind."""
    rope_local_theta: float | None = None
    """Rotary base of the window layers (Gemma 3: 10,000, with rope_theta and rope_scaling for the global layers);
    null means rope_theta and rope_scaling for every layer."""

    def __post_init__(self) -> None:
        check_types(self, "model.")
        require(self.n_future >= 1, f"model.n_future must be at least 1 (got {self.n_future}): "
                 "use 1 for a next-token model, 4 as in the paper")
        require(self.n_layer >= self.n_future, f"model.n_layer ({self.n_layer}) must be at least model.n_future "
                 f"({self.n_future}): n_layer counts the trunk and one layer per head")
        # (At most vocab_size: checked where the size is known, which with --init_from is after this config.)
        require(self.draft_vocab >= 0, f"model.draft_vocab must be 0 (draft over the whole vocabulary) or a "
                 f"number of tokens, got {self.draft_vocab}")
        for name in ("vocab_size", "d_model", "n_head", "max_seq_len"):
            require(getattr(self, name) >= 1, f"model.{name} must be positive (got {getattr(self, name)})")
        if self.head_dim is None:
            require(self.d_model % self.n_head == 0, f"model.d_model ({self.d_model}) must be divisible by "
                     f"model.n_head ({self.n_head}), or set model.head_dim")
        else:
            require(self.head_dim >= 1, f"model.head_dim must be positive (got {self.head_dim})")
        for name in ("n_kv_head", "ffn_hidden"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"model.{name} must be positive (got {value}), or null for the "
                     "default")
        for name in ("rope_theta", "norm_eps"):
            require(getattr(self, name) > 0, f"model.{name} must be positive (got {getattr(self, name)})")
        require(self.init_std >= 0, f"model.init_std must be >= 0 (got {self.init_std})")
        require(self.head_size % 2 == 0, f"the attention head width {self.head_size} must be even for rotary "
                 "embeddings: change d_model, n_head or head_dim")
        require(self.n_head % self.kv_heads == 0,
                 f"model.n_head ({self.n_head}) must be divisible by model.n_kv_head ({self.kv_heads})")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)
        require(self.attention_scale is None or self.attention_scale > 0,
                 f"model.attention_scale must be positive (got {self.attention_scale}), or null for 1/sqrt(head width)")
        require(self.sliding_window is None or self.sliding_window >= 1,
                 f"model.sliding_window must be at least 1 (got {self.sliding_window}), or null for none")
        require(self.rope_local_theta is None or self.rope_local_theta > 0,
                 f"model.rope_local_theta must be positive (got {self.rope_local_theta}), or null")
        require(self.drafter_layers is None or (len(self.drafter_layers) == 3 and len(set(self.drafter_layers)) == 3
                                                  and min(self.drafter_layers) >= 0),
                 f"model.drafter_layers must be three distinct layer numbers >= 0 (got {self.drafter_layers}): the "
                 "engines read exactly three; or null for the default")
        if self.sliding_layers is not None:
            require(self.sliding_window is not None, "model.sliding_layers needs model.sliding_window: set the "
                     "window, or sliding_layers to null")
            n = self.n_trunk_layers + 1
            bad = [i for i in self.sliding_layers if not 0 <= i < n]
            require(not bad, f"model.sliding_layers names layer {bad[0] if bad else 0}, but the model has layers "
                     f"0..{n - 1} (the trunk and head 1)")

    def block_switches(self) -> dict[str, Any]:
        """The other families' switches this config sets, with their values (empty for a Llama block)."""
        plain = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
        return {name: getattr(self, name) for name in BLOCK_SWITCHES if getattr(self, name) != plain[name]}

    def is_sliding(self, layer: int) -> bool:
        """Whether layers[layer] (trunk and head 1, 0-based) attends within the window."""
        if self.sliding_window is None:
            return False
        return self.sliding_layers is None or layer in self.sliding_layers

    def window_of(self, layer: int) -> int | None:
        """The attention window of layers[layer], or None for full causal attention."""
        return self.sliding_window if self.is_sliding(layer) else None

    @property
    def n_trunk_layers(self) -> int:
        return self.n_layer - self.n_future

    def check_drafter(self) -> None:
        """The drafter's layers against the base (checked when a model is built: with --init-from the base's depth
        comes from the checkpoint, after this config)."""
        L = self.n_trunk_layers + 1
        require(L >= 3, f"model.drafter reads three distinct base layers, and this base has {L} (n_layer - n_future "
                 "+ 1): use a deeper model, or model.drafter none")
        bad = [i for i in self.drafter_feature_layers if i >= L]
        require(not bad, f"model.drafter_layers names layer {bad[0] if bad else 0}, but the base has layers 0..{L - 1} "
                 "(the engines read only inputs of the base's own layers): choose three in that range, or null")

    @property
    def drafter_feature_layers(self) -> tuple[int, int, int]:
        """The three base layers whose inputs the drafter reads (`drafter_layers`, or the default rule)."""
        if self.drafter_layers is not None:
            return tuple(self.drafter_layers)
        L = self.n_trunk_layers + 1
        # vLLM's and SpecForge's default; it collides below 7 layers, where the spread keeps three distinct ids.
        return (2, L // 2, L - 3) if L >= 7 else (1, L // 2, L - 1) if L >= 4 else (0, 1, 2)

    @property
    def head_size(self) -> int:
        """The attention head width in use: head_dim, or d_model / n_head."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def ffn_dim(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        hidden = int(2 * (4 * self.d_model) / 3)  # Llama: SwiGLU's 3 matrices cost what a 4x MLP's 2 cost
        return 256 * ((hidden + 255) // 256)


# The ModelConfig fields that describe other families' blocks (all at their defaults: a Llama block).
BLOCK_SWITCHES = ("qkv_bias", "qk_norm", "norm_unit_offset", "sandwich_norm", "scale_embeddings", "activation",
                  "attention_scale", "sliding_window", "sliding_layers", "rope_local_theta")

ROPE_SCALING_KEYS = {"llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
                     "linear": ("factor",)}


def _check_rope_scaling(scaling: dict) -> None:
    kind = scaling.get("rope_type")
    require(kind in ROPE_SCALING_KEYS, f"model.rope_scaling.rope_type {kind!r} is not supported: use "
             f"{' or '.join(ROPE_SCALING_KEYS)}, or null for no scaling")
    expected = set(ROPE_SCALING_KEYS[kind])
    given = set(scaling) - {"rope_type"}
    require(given == expected, f"model.rope_scaling of type {kind} takes exactly {', '.join(sorted(expected))} "
             f"(got {', '.join(sorted(given)) or 'none'})")
    for key in expected:
        value = scaling[key]
        require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                 f"model.rope_scaling.{key} must be a positive number (got {value!r})")
    if kind == "llama3":
        require(scaling["high_freq_factor"] > scaling["low_freq_factor"],
                 "model.rope_scaling.high_freq_factor must exceed low_freq_factor")


def model_config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    """The fields where two model configs differ, as 'name a -> b'."""
    return [f"{f.name} {getattr(a, f.name)} -> {getattr(b, f.name)}" for f in dataclasses.fields(a)
            if getattr(a, f.name) != getattr(b, f.name)]
