"""Configuration dataclasses: one schema for YAML files, command-line overrides and the config saved in checkpoints.

Every field carries a docstring right below it; `multitoken train --help` shows those texts, so they are the
documentation. Each dataclass validates itself in `__post_init__` and raises `ConfigError` naming the field and the fix.
The defaults of `TrainConfig` are the built-in default run (`multitoken train` with no arguments): a small byte-level
4-token model on the Python standard library, sized to finish in minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from multitoken.errors import ConfigError

SEED_LIMIT = 2 ** 63  # torch.manual_seed and numpy both take any seed in [0, 2**63)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _conforms(value: Any, hint: Any) -> bool:
    """Whether value fits a field annotation: the subset of typing the config dataclasses use."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an integer is a fine float (YAML writes 1 for 1.0); NaN and infinity are not
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    return dataclasses.is_dataclass(hint) and isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return "a list of " + {float: "finite numbers", int: "integers", str: "strings"}.get(args[0], "values")
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _check_types(config: Any, prefix: str) -> None:
    """Every field of a config dataclass against its annotation, so that library callers and saved configs get the
    checks the command line gives (`TrainConfig(precision="fp16")` must not silently train in fp32)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        _require(_conforms(value, hints[f.name]),
                 f"{prefix}{f.name} must be {_describe(hints[f.name])} (got {value!r})")


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
        _check_types(self, "model.")
        _require(self.n_future >= 1, f"model.n_future must be at least 1 (got {self.n_future}): "
                 "use 1 for a next-token model, 4 as in the paper")
        _require(self.n_layer >= self.n_future, f"model.n_layer ({self.n_layer}) must be at least model.n_future "
                 f"({self.n_future}): n_layer counts the trunk and one layer per head")
        # (At most vocab_size: checked where the size is known, which with --init_from is after this config.)
        _require(self.draft_vocab >= 0, f"model.draft_vocab must be 0 (draft over the whole vocabulary) or a "
                 f"number of tokens, got {self.draft_vocab}")
        for name in ("vocab_size", "d_model", "n_head", "max_seq_len"):
            _require(getattr(self, name) >= 1, f"model.{name} must be positive (got {getattr(self, name)})")
        if self.head_dim is None:
            _require(self.d_model % self.n_head == 0, f"model.d_model ({self.d_model}) must be divisible by "
                     f"model.n_head ({self.n_head}), or set model.head_dim")
        else:
            _require(self.head_dim >= 1, f"model.head_dim must be positive (got {self.head_dim})")
        for name in ("n_kv_head", "ffn_hidden"):
            value = getattr(self, name)
            _require(value is None or value >= 1, f"model.{name} must be positive (got {value}), or null for the "
                     "default")
        for name in ("rope_theta", "norm_eps"):
            _require(getattr(self, name) > 0, f"model.{name} must be positive (got {getattr(self, name)})")
        _require(self.init_std >= 0, f"model.init_std must be >= 0 (got {self.init_std})")
        _require(self.head_size % 2 == 0, f"the attention head width {self.head_size} must be even for rotary "
                 "embeddings: change d_model, n_head or head_dim")
        _require(self.n_head % self.kv_heads == 0,
                 f"model.n_head ({self.n_head}) must be divisible by model.n_kv_head ({self.kv_heads})")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)
        _require(self.attention_scale is None or self.attention_scale > 0,
                 f"model.attention_scale must be positive (got {self.attention_scale}), or null for 1/sqrt(head width)")
        _require(self.sliding_window is None or self.sliding_window >= 1,
                 f"model.sliding_window must be at least 1 (got {self.sliding_window}), or null for none")
        _require(self.rope_local_theta is None or self.rope_local_theta > 0,
                 f"model.rope_local_theta must be positive (got {self.rope_local_theta}), or null")
        _require(self.drafter_layers is None or (len(self.drafter_layers) == 3 and len(set(self.drafter_layers)) == 3
                                                  and min(self.drafter_layers) >= 0),
                 f"model.drafter_layers must be three distinct layer numbers >= 0 (got {self.drafter_layers}): the "
                 "engines read exactly three; or null for the default")
        if self.sliding_layers is not None:
            _require(self.sliding_window is not None, "model.sliding_layers needs model.sliding_window: set the "
                     "window, or sliding_layers to null")
            n = self.n_trunk_layers + 1
            bad = [i for i in self.sliding_layers if not 0 <= i < n]
            _require(not bad, f"model.sliding_layers names layer {bad[0] if bad else 0}, but the model has layers "
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
        _require(L >= 3, f"model.drafter reads three distinct base layers, and this base has {L} (n_layer - n_future "
                 "+ 1): use a deeper model, or model.drafter none")
        bad = [i for i in self.drafter_feature_layers if i >= L]
        _require(not bad, f"model.drafter_layers names layer {bad[0] if bad else 0}, but the base has layers 0..{L - 1} "
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
    _require(kind in ROPE_SCALING_KEYS, f"model.rope_scaling.rope_type {kind!r} is not supported: use "
             f"{' or '.join(ROPE_SCALING_KEYS)}, or null for no scaling")
    expected = set(ROPE_SCALING_KEYS[kind])
    given = set(scaling) - {"rope_type"}
    _require(given == expected, f"model.rope_scaling of type {kind} takes exactly {', '.join(sorted(expected))} "
             f"(got {', '.join(sorted(given)) or 'none'})")
    for key in expected:
        value = scaling[key]
        _require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                 f"model.rope_scaling.{key} must be a positive number (got {value!r})")
    if kind == "llama3":
        _require(scaling["high_freq_factor"] > scaling["low_freq_factor"],
                 "model.rope_scaling.high_freq_factor must exceed low_freq_factor")


@dataclass
class DataConfig:
    """Where training text comes from and how it is tokenized and split."""

    path: str | list[str] | None = None
    """Text file or folder (or a list of them) to train on, or prepared folders (`multitoken prepare` or `distill`;
    a list is read as one corpus); null means the built-in default, this Python's standard library source."""
    tokenizer: str = "bytes"
    """Tokenizer: 'bytes' is byte-level (vocab 256), no training needed; or the path of a tokenizer folder or
    tokenizer.json (`multitoken tokenizer train` makes one). Data from `multitoken prepare` brings its own."""
    val_fraction: float = 0.02
    """Share of files held out for validation (split by file, deterministic)."""
    cache_dir: str | None = None
    """Where token caches live; null means $MULTITOKEN_CACHE or ~/.cache/multitoken."""
    order: Literal["random", "sequential"] = "random"
    """How training windows are drawn: 'random' positions (reproducible from seed and step), or 'sequential' epochs
    over the split, front to back."""
    mask_documents: bool = False
    """Ignore targets that lie in the next document: head i's target at position t is skipped when an
    end-of-document token occurs among tokens t..t+i-1 (the end token itself is still predicted)."""

    def __post_init__(self) -> None:
        _check_types(self, "data.")
        _require(0.0 < self.val_fraction < 1.0,
                 f"data.val_fraction must be between 0 and 1 (got {self.val_fraction})")
        if isinstance(self.path, str):  # a single path in YAML is a natural thing to write
            self.path = [self.path]
        _require(self.path is None or (self.path and all(p.strip() for p in self.path)),
                 f"data.path {self.path!r} names no file: give a file or folder, or null for the built-in corpus")
        _require(bool(self.tokenizer.strip()), "data.tokenizer is empty: use 'bytes' or a tokenizer folder")
        _require(self.cache_dir is None or bool(self.cache_dir.strip()),
                 "data.cache_dir is empty: give a folder, or null for the default cache")


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay (the paper's recipe)."""

    lr: float = 2e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.03
    """The cosine decays to this fraction of lr (the paper: 0.03)."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices; norms and embeddings get none."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping."""

    def __post_init__(self) -> None:
        _check_types(self, "optim.")
        _require(self.lr > 0, f"optim.lr must be positive (got {self.lr})")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"optim.min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})")
        _require(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0 (got {self.warmup_steps})")
        _require(self.grad_clip >= 0, f"optim.grad_clip must be >= 0 (got {self.grad_clip}); 0 disables clipping")
        _require(self.weight_decay >= 0, f"optim.weight_decay must be >= 0 (got {self.weight_decay}); 0 disables it")
        for name in ("beta1", "beta2"):
            _require(0.0 <= getattr(self, name) < 1.0, f"optim.{name} must be in [0, 1) (got {getattr(self, name)})")
        _require(self.eps > 0, f"optim.eps must be positive (got {self.eps})")


@dataclass
class TrainConfig:
    """A training run. The defaults are the built-in default run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Model shape."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    out_dir: str = "runs/default"
    """Run directory: checkpoints/, metrics.jsonl and config.yaml go here."""
    max_steps: int = 800
    """Optimizer steps to train for."""
    batch_size: int = 16
    """Sequences per micro-batch."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step (global batch = batch_size * grad_accum_steps)."""
    seq_len: int | None = None
    """Tokens per training and validation window; null means model.max_seq_len, the whole context. Set it lower to
    finetune an imported long-context model on short windows (its context stays model.max_seq_len)."""
    loss_strategy: Literal["sequential", "naive"] = "sequential"
    """'sequential': the paper's memory-efficient head loop (one head's logits alive); 'naive': all heads at once."""
    cross_entropy: Literal["chunked", "plain"] = "chunked"
    """'chunked': linear + cross-entropy over chunks of tokens, never holding a head's full logits; 'plain': the
    reference (logits materialized, then F.cross_entropy). Same loss and gradients."""
    head_weights: list[float] | str | None = None
    """Per-head loss weights: a list (head 1 first); 'decay:R' for R^(i-1) (e.g. decay:0.8); 'deepseek:L' for 1 on
    head 1 and L / (n_future - 1) on each extra head (DeepSeek-V3's scaled mean); null means all 1 (the paper's sum)."""
    init_from: str | None = None
    """Start from this checkpoint's weights (a run or step directory), for finetuning. The model's shape comes from
    the checkpoint except model.n_future, which may differ: heads it lacks are copied from its head 1, heads beyond
    model.n_future are dropped, the trunk is kept. The optimizer and schedule start fresh."""
    freeze: Literal["none", "trunk", "base"] = "none"
    """'base': train only the extra heads (heads 2..n, with their next-token projections); embeddings, trunk, head
    1, the shared norm and the unembedding stay bit for bit as they were, so the model says exactly what it said and
    speculative decoding is lossless: the choice for giving a model you already have (converted, or --init-from)
    speculative-decoding heads. 'trunk': train the heads, head 1 among them, the shared norm and the unembedding with
    embeddings and trunk layers fixed: cheaper than a full finetune, but head 1 moves, so the model's own text changes
    too."""
    drafter_steps: int = 3
    """Chained steps the drafter's training unrolls (EAGLE-3's training-time test): step s reads its own state and
    the text's token from step s - 1 and predicts the token 2 + s ahead, as it will when drafting."""
    drafter_weight: float = 0.3
    """The drafter's loss weight beside the heads' (DeepSeek-V3 weights its MTP module 0.3); its steps are weighted
    0.8^s within it (EAGLE-3). With --freeze base the drafter alone learns and the weight only scales its loss."""
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    """Data parallelism under torchrun: 'ddp' (replicated weights), 'fsdp' (FSDP2, sharded weights and optimizer
    state), 'auto' = ddp when launched with more than one process, else none."""
    seed: int = 1337
    """Seed for initialisation and data order."""
    eval_interval: int = 200
    """Validate every this many steps (and at the end)."""
    eval_batches: int = 8
    """Validation batches of batch_size windows each, evenly spaced over the validation split."""
    log_interval: int = 10
    """Log training metrics every this many steps."""
    save_interval: int = 200
    """Save a checkpoint every this many steps (and at the end)."""
    keep_last: int = 2
    """Keep this many most recent checkpoints."""
    resume: bool | str = False
    """Continue from the newest loadable checkpoint in out_dir (starts fresh if there is none; a damaged newest one is
    skipped, saying so); or give a checkpoint or run directory to continue from that one."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """'auto': bf16 autocast on CUDA, fp32 on CPU."""
    compile: bool = False
    """Compile each transformer layer with torch.compile."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        _check_types(self, "")
        _require(bool(self.out_dir.strip()), "out_dir is empty: name the run directory, e.g. --out_dir runs/mine")
        _require(0 <= self.seed < SEED_LIMIT, f"seed must be in [0, 2**63) (got {self.seed})")
        _require(not isinstance(self.resume, str) or bool(self.resume.strip()),
                 "resume is empty: give true, or the checkpoint to continue from")
        _require(self.init_from is None or bool(self.init_from.strip()),
                 "init_from is empty: give a checkpoint, or null to start from random weights")
        for name in ("max_steps", "batch_size", "grad_accum_steps", "eval_interval", "eval_batches",
                     "log_interval", "save_interval", "keep_last"):
            _require(getattr(self, name) >= 1, f"{name} must be at least 1 (got {getattr(self, name)})")
        _require(self.drafter_steps >= 1, f"drafter_steps must be at least 1 (got {self.drafter_steps})")
        _require(self.drafter_weight > 0, f"drafter_weight must be positive (got {self.drafter_weight})")
        _require(self.seq_len is None or self.seq_len >= 1, f"seq_len must be at least 1 (got {self.seq_len}); "
                 "null means model.max_seq_len")
        weights = self.resolved_head_weights()
        _require(len(weights) == self.model.n_future, f"head_weights has {len(weights)} entries but model.n_future "
                 f"is {self.model.n_future}: give one weight per head, or a rule like decay:0.8")
        _require(all(math.isfinite(w) and w >= 0 for w in weights),
                 f"head_weights must be finite and non-negative (got {weights})")
        _require(any(w > 0 for w in weights), f"head_weights {weights} are all zero: nothing would be trained; give "
                 "head 1 a positive weight")

    @property
    def window_tokens(self) -> int:
        """Input tokens per training window: seq_len, or the model's whole context."""
        return self.seq_len or self.model.max_seq_len

    def resolved_head_weights(self) -> list[float]:
        """The per-head loss weights as numbers, head 1 first."""
        n, spec = self.model.n_future, self.head_weights
        if spec is None:
            return [1.0] * n
        if not isinstance(spec, str):
            return [float(w) for w in spec]
        rule, _, value = spec.partition(":")
        try:
            x = float(value)
        except ValueError:
            x = None
        if rule == "decay" and x is not None:
            return [x ** i for i in range(n)]
        if rule == "deepseek" and x is not None:  # with one head there are no extra heads to share L
            return [1.0] + [x / (n - 1)] * (n - 1) if n > 1 else [1.0]
        raise ConfigError(f"head_weights {spec!r} is not understood: give a list like [1, 0.5], 'decay:0.8' or "
                          "'deepseek:0.3'")


def model_config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    """The fields where two model configs differ, as 'name a -> b'."""
    return [f"{f.name} {getattr(a, f.name)} -> {getattr(b, f.name)}" for f in dataclasses.fields(a)
            if getattr(a, f.name) != getattr(b, f.name)]


def to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (for YAML and JSON)."""
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build a config dataclass from a nested dict, rejecting unknown keys by name."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        sub = _NESTED.get((cls, name))
        kwargs[name] = from_dict(sub, value or {}, f"{where}{name}.") if sub else value
    return cls(**kwargs)


_NESTED = {(TrainConfig, "model"): ModelConfig, (TrainConfig, "data"): DataConfig,
           (TrainConfig, "optim"): OptimConfig}


def int_list(text: str, flag: str, example: str = "1,2,4") -> list[int]:
    """A comma-separated list of positive integers given to an option, or a one-line error naming it."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, e.g. {example} (got {text!r})") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} needs positive integers (got {text!r})")
    return values
