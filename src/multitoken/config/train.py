"""A run's settings: data (`DataConfig`), the optimizer (`OptimConfig`) and the whole run (`TrainConfig`), whose
defaults are the built-in default run; and a config's round trip through plain dicts (YAML, JSON, checkpoints)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from multitoken.config.checks import SEED_LIMIT, check_types, require
from multitoken.config.model import ModelConfig
from multitoken.errors import ConfigError

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
        check_types(self, "data.")
        require(0.0 < self.val_fraction < 1.0,
                 f"data.val_fraction must be between 0 and 1 (got {self.val_fraction})")
        if isinstance(self.path, str):  # a single path in YAML is a natural thing to write
            self.path = [self.path]
        require(self.path is None or (self.path and all(p.strip() for p in self.path)),
                 f"data.path {self.path!r} names no file: give a file or folder, or null for the built-in corpus")
        require(bool(self.tokenizer.strip()), "data.tokenizer is empty: use 'bytes' or a tokenizer folder")
        require(self.cache_dir is None or bool(self.cache_dir.strip()),
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
        check_types(self, "optim.")
        require(self.lr > 0, f"optim.lr must be positive (got {self.lr})")
        require(0.0 <= self.min_lr_ratio <= 1.0, f"optim.min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})")
        require(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0 (got {self.warmup_steps})")
        require(self.grad_clip >= 0, f"optim.grad_clip must be >= 0 (got {self.grad_clip}); 0 disables clipping")
        require(self.weight_decay >= 0, f"optim.weight_decay must be >= 0 (got {self.weight_decay}); 0 disables it")
        for name in ("beta1", "beta2"):
            require(0.0 <= getattr(self, name) < 1.0, f"optim.{name} must be in [0, 1) (got {getattr(self, name)})")
        require(self.eps > 0, f"optim.eps must be positive (got {self.eps})")


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
    draft_targets: Literal["text", "model"] = "text"
    """What the extra heads and the drafter learn to guess: 'text', the data's next tokens (on `multitoken distill`'s
    data, the model's own answers, that is its own choices); 'model', the frozen model's own greedy choice after
    the text so far, which is what speculative decoding checks a guess against, so that any corpus (code, docs, chat
    logs) teaches the drafts the model's habits without distilling it first. Needs --freeze base."""
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
        check_types(self, "")
        require(bool(self.out_dir.strip()), "out_dir is empty: name the run directory, e.g. --out_dir runs/mine")
        require(0 <= self.seed < SEED_LIMIT, f"seed must be in [0, 2**63) (got {self.seed})")
        require(not isinstance(self.resume, str) or bool(self.resume.strip()),
                 "resume is empty: give true, or the checkpoint to continue from")
        require(self.init_from is None or bool(self.init_from.strip()),
                 "init_from is empty: give a checkpoint, or null to start from random weights")
        require(self.freeze != "base" or self.init_from is not None,
                "--freeze base keeps a model as it is, and without --init-from the model is random: give --init-from "
                "CKPT (the model to give heads or a drafter), or leave --freeze out")
        require(self.draft_targets == "text" or self.freeze == "base",
                "--draft_targets model scores the drafts against the model's own choices, which move while the model "
                "learns: add --freeze base (and --init-from CKPT), or use --draft_targets text")
        for name in ("max_steps", "batch_size", "grad_accum_steps", "eval_interval", "eval_batches",
                     "log_interval", "save_interval", "keep_last"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1 (got {getattr(self, name)})")
        require(self.drafter_steps >= 1, f"drafter_steps must be at least 1 (got {self.drafter_steps})")
        require(self.drafter_weight > 0, f"drafter_weight must be positive (got {self.drafter_weight})")
        require(self.seq_len is None or self.seq_len >= 1, f"seq_len must be at least 1 (got {self.seq_len}); "
                 "null means model.max_seq_len")
        weights = self.resolved_head_weights()
        require(len(weights) == self.model.n_future, f"head_weights has {len(weights)} entries but model.n_future "
                 f"is {self.model.n_future}: give one weight per head, or a rule like decay:0.8")
        require(all(math.isfinite(w) and w >= 0 for w in weights),
                 f"head_weights must be finite and non-negative (got {weights})")
        require(any(w > 0 for w in weights), f"head_weights {weights} are all zero: nothing would be trained; give "
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
