"""What both experiments share: a word-level tokenizer, generated documents prepared like any corpus, runs trained
through the ordinary trainer (each a normal, resumable run directory), evaluations cached per checkpoint, and the
results file.

    OUT/data/                 generated training documents, prepared (`multitoken prepare`'s format); the byte-level
                              experiment trains on the built-in corpus instead
    OUT/runs/<size>-n<N>-s<seed>/   ordinary run directories: config.yaml, metrics.jsonl, checkpoints/
    OUT/runs/.../evaluations.jsonl  the experiment's metric for each evaluated checkpoint (step, tokens, values)
    OUT/results.json          one record per run; OUT/results.md a table; OUT/*.png the plots

Re-running a grid skips finished runs, resumes unfinished ones from their last checkpoint and evaluates only
checkpoints it has not evaluated yet, so a grid can span several sittings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from multitoken.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from multitoken.data.prepare import PrepareOptions, prepare
from multitoken.data.shards import is_prepared
from multitoken.data.tokenizer import EOT_TOKEN, BPETokenizer, load_tokenizer, require_tokenizers
from multitoken.files import atomic_write_text, file_lock
from multitoken.model import MTPModel
from multitoken.checkpoint import list_checkpoints, load_checkpoint, read_meta

UNK = "<unk>"


def word_tokenizer(words: Iterable[str]) -> BPETokenizer:
    """A word-level tokenizer: every whitespace-separated word is one token, <|endoftext|> is id 0."""
    tk = require_tokenizers()
    vocab = {EOT_TOKEN: 0, UNK: 1}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = tk.Tokenizer(tk.models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
    return BPETokenizer(tokenizer)


def prepare_documents(texts: Callable[[], list[str]], tokenizer: BPETokenizer, out: Path,
                      val_fraction: float = 0.01) -> tuple[DataConfig, BPETokenizer]:
    """The training data of every run of the grid and its tokenizer: the documents written as JSON Lines under OUT/data
    and prepared, once. `texts` is called only when they are not prepared yet, since generating them takes seconds
    to minutes and every later sitting of the grid reuses the prepared data."""
    out.mkdir(parents=True, exist_ok=True)
    prepared = out / "prepared"
    if not (is_prepared(prepared) and (prepared / "manifest.json").is_file()):
        source = out / "documents.jsonl"
        atomic_write_text(source, "".join(json.dumps({"text": t}) + "\n" for t in texts()))
        prepare([str(source)], tokenizer, prepared, PrepareOptions(val_fraction=val_fraction, progress=False))
    return DataConfig(path=[str(prepared)]), load_tokenizer(prepared / "tokenizer")


@dataclass(frozen=True)
class Shape:
    d_model: int
    n_layer: int  # all layers: trunk + heads (parameter-matched across n_future)
    n_head: int

    @property
    def ffn_hidden(self) -> int:
        """SwiGLU width 8/3 d, unrounded: a layer then holds 12 d^2 parameters, the paper's size rule (Llama's rounding
        up to a multiple of 256 would double a 64-wide model's feed-forward)."""
        return int(8 * self.d_model / 3)

    def model_config(self, vocab_size: int, n_future: int, max_seq_len: int = 256,
                     drafter: bool = False) -> ModelConfig:
        """With `drafter`, the sequential module takes the place of one trunk layer (its own layer, nearly equal in
        parameters), so it is compared at about the same size as the parallel heads."""
        return ModelConfig(vocab_size=vocab_size, d_model=self.d_model, n_layer=self.n_layer - int(drafter),
                           n_head=self.n_head, n_future=n_future, max_seq_len=max_seq_len, ffn_hidden=self.ffn_hidden,
                           drafter="eagle3" if drafter else "none")


@dataclass(frozen=True)
class RunSpec:
    size: str
    shape: Shape
    n_future: int
    seed: int
    drafter: bool = False  # the sequential module (EAGLE-3 layout) beside the heads

    @property
    def name(self) -> str:
        return f"{self.size}-n{self.n_future}{'-drafter' if self.drafter else ''}-s{self.seed}"


@dataclass(frozen=True)
class Budget:
    tokens: int  # trained tokens per run
    seq_len: int = 256
    batch_tokens: int = 8192
    evaluations: int = 20  # checkpoints evaluated along the run (the paper's "epoch oracle" takes their best)
    lr: float = 1e-3
    warmup: float = 0.02  # share of the steps

    @property
    def batch_size(self) -> int:
        return max(1, self.batch_tokens // self.seq_len)

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.tokens / (self.batch_size * self.seq_len)))


def train_config(spec: RunSpec, budget: Budget, vocab_size: int, data: DataConfig, run_dir: Path) -> TrainConfig:
    steps = budget.steps
    interval = max(1, steps // budget.evaluations)
    return TrainConfig(
        model=spec.shape.model_config(vocab_size, spec.n_future, budget.seq_len, spec.drafter),
        data=data, optim=OptimConfig(lr=budget.lr, warmup_steps=round(budget.warmup * steps)),
        out_dir=str(run_dir), max_steps=steps, batch_size=budget.batch_size, eval_interval=interval,
        eval_batches=4, log_interval=max(1, interval // 2), save_interval=interval,
        keep_last=budget.evaluations + 2, seed=spec.seed, resume=True, progress=False)


def non_embedding_params(shape: Shape, n_future: int, vocab_size: int, drafter: bool = False) -> int:
    """Parameters outside the input embedding and the unembeddings (the paper's size measure; the drafter's own
    draft-vocabulary unembedding is left out like the heads' shared one)."""
    with torch.device("meta"):
        model = MTPModel(shape.model_config(vocab_size, n_future, drafter=drafter))
    counts = model.num_params()
    unembedding = sum(p.numel() for p in model.drafter.output.parameters()) if drafter else 0
    return counts["trunk"] + counts["heads"] + counts["norm"] + counts["drafter"] - unembedding


def run_training(cfg: TrainConfig, log: Callable[[str], None]) -> None:
    """Train the run to its end: skipped when finished, resumed when it was stopped."""
    from multitoken.training.trainer import train

    done = list_checkpoints(cfg.out_dir)
    if done and read_meta(done[-1])["step"] >= cfg.max_steps:
        return
    log(f"training {Path(cfg.out_dir).name}" + (f" from step {read_meta(done[-1])['step']}" if done else ""))
    train(cfg)


def evaluate_checkpoints(run_dir: Path, metric: Callable[[MTPModel], dict], device: torch.device,
                         log: Callable[[str], None]) -> list[dict]:
    """The metric for every checkpoint of the run, computed once each (cached in evaluations.jsonl)."""
    path = run_dir / "evaluations.jsonl"
    cached = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                cached[record["step"]] = record
            except (ValueError, KeyError):
                continue  # a line torn by a kill: evaluated again
    for ckpt in list_checkpoints(run_dir):
        meta = read_meta(ckpt)
        if meta["step"] in cached:
            continue
        model, _, _ = load_checkpoint(ckpt, device)
        with torch.no_grad():
            values = metric(model)
        record = {"step": meta["step"], "tokens": meta.get("tokens_seen"), **values}
        cached[record["step"]] = record
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log(f"  {run_dir.name} step {meta['step']}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in values.items() if isinstance(v, float)))
    return [cached[step] for step in sorted(cached)]


def write_results(out: Path, records: list[dict]) -> list[dict]:
    """Merge these runs' records into OUT/results.json (a record per run name: a grid run size by size, or with other
    settings for some runs, accumulates there). Returns every record. Processes sharing one grid (--first_seed) take
    turns, so neither's read-merge-write drops the other's runs."""
    path = out / "results.json"
    with file_lock(out / ".results.lock"):
        merged: dict[str, dict] = {}
        if path.exists():
            try:
                merged = {r["run"]: r for r in json.loads(path.read_text())}
            except (ValueError, KeyError, TypeError):
                merged = {}  # damaged: rebuilt from the runs that report now
        merged.update((r["run"], r) for r in records)
        every = list(merged.values())
        atomic_write_text(path, json.dumps(every, indent=1) + "\n")
    return every


def spec_record(experiment: str, spec: RunSpec, budget: Budget, vocab_size: int) -> dict:
    return {"experiment": experiment, "run": spec.name, "size": spec.size, "n_future": spec.n_future,
            "drafter": spec.drafter, "seed": spec.seed, "shape": asdict(spec.shape),
            "non_embedding_params": non_embedding_params(spec.shape, spec.n_future, vocab_size, spec.drafter),
            "lr": budget.lr, "tokens_planned": budget.steps * budget.batch_size * budget.seq_len}
