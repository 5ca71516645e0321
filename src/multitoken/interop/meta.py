"""Meta's folders (facebook/multi-token-prediction, Llama 2 and 3 releases): params.json <-> ModelConfig, and the
consolidated.*.pth files.

Meta's parameter names are ours, so the tensors map one to one; `n_layers` counts every layer and
`n_future_tokens` the heads, as our n_layer and n_future do. Only two things need work: the FFN width, which
params.json gives as a rule (`multiple_of`, `ffn_dim_multiplier`) rather than a number, and checkpoints saved by
several model-parallel ranks (consolidated.00.pth, .01.pth, ...), whose tensors are cut along one dimension (or
replicated, for norms) and are joined here by comparing each piece's shape with the full one.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from multitoken.config import ModelConfig
from multitoken.errors import CheckpointError
from multitoken.files import read_json
from multitoken.interop.tensors import LazyTensor, torch_checkpoint_tensors

PARAMS_FILE = "params.json"
CONSOLIDATED = re.compile(r"^consolidated(\.\d+)?\.pth$")
DEFAULT_CONTEXT = 4096  # params.json names no context; Llama 2 and Meta's multi-token models were trained at 4096
# Llama 3.1's `use_scaled_rope`: fixed constants in Meta's code rather than fields of params.json.
LLAMA31_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}
IGNORED = ("rope.freqs",)  # Llama 1 saved its rotary table; recomputed from the config


def ffn_width(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """Meta's rule for the SwiGLU hidden width."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def ffn_rule_for(dim: int, width: int) -> tuple[int, float | None]:
    """(multiple_of, ffn_dim_multiplier) under which Meta's rule gives this width: Llama's 256 when it does, else a
    rule that lands exactly on it."""
    for multiple_of, multiplier in ((256, None), (width, None), (1, (width + 0.5) / int(8 * dim / 3))):
        if ffn_width(dim, multiple_of, multiplier) == width:
            return multiple_of, multiplier
    raise CheckpointError(f"no Meta FFN rule gives width {width} at dim {dim}")


def checkpoint_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if CONSOLIDATED.match(p.name))
    if not files:
        raise CheckpointError(f"{folder} has {PARAMS_FILE} but no consolidated.pth or consolidated.NN.pth: "
                              "download the weights")
    numbered = [p for p in files if p.name != "consolidated.pth"]
    if numbered:
        expected = [f"consolidated.{i:02d}.pth" for i in range(len(numbered))]
        if [p.name for p in numbered] != expected:
            missing = sorted(set(expected) - {p.name for p in numbered}) or [expected[-1]]
            raise CheckpointError(f"{folder}: shard {missing[0]} is missing (found {', '.join(p.name for p in numbered)})")
        return numbered
    return files


def read_params(folder: Path, max_seq_len: int | None = None) -> tuple[ModelConfig, list[str], list[Path]]:
    """ModelConfig, notes and weight files of a Meta folder. Reads only the files' headers (lazily)."""
    path = folder / PARAMS_FILE
    raw = read_json(path, "download it again")
    files = checkpoint_files(folder)
    notes = []
    try:
        dim, n_heads = int(raw["dim"]), int(raw["n_heads"])
        vocab = int(raw.get("vocab_size", -1))
        if vocab < 1:  # Llama 2 writes -1 and reads it from the tokenizer; the unembedding's rows tell it too
            vocab = sum(torch_checkpoint_tensors(f)["output.weight"].shape[0] for f in files)
        n_kv = int(raw.get("n_kv_heads") or n_heads)
        scaling = dict(LLAMA31_SCALING) if raw.get("use_scaled_rope") else None
        if raw.get("use_scaled_rope") and raw.get("rope_scaling_factor"):  # Llama 3.2 1B/3B use factor 32
            scaling["factor"] = float(raw["rope_scaling_factor"])
        config = ModelConfig(
            vocab_size=vocab, d_model=dim, n_layer=int(raw["n_layers"]), n_head=n_heads,
            n_kv_head=None if n_kv == n_heads else n_kv, n_future=int(raw.get("n_future_tokens", 1)),
            max_seq_len=max_seq_len or int(raw.get("max_seq_len", DEFAULT_CONTEXT)),
            ffn_hidden=ffn_width(dim, int(raw.get("multiple_of", 256)), raw.get("ffn_dim_multiplier")),
            rope_theta=float(raw.get("rope_theta", 10000.0)), rope_scaling=scaling,
            norm_eps=float(raw.get("norm_eps", 1e-5)))
    except KeyError as e:
        raise CheckpointError(f"{path} lacks {e.args[0]!r}: not a Meta params.json") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} describes a model multitoken cannot build: {e}") from None
    if "max_seq_len" not in raw and max_seq_len is None:
        notes.append(f"params.json names no context: using {DEFAULT_CONTEXT} tokens (--max-seq-len sets another)")
    return config, notes, files


def read_tensors(files: list[Path], expected: dict[str, tuple[int, ...]]) -> dict[str, LazyTensor]:
    """Every tensor of the checkpoint, shards joined: a piece of the full shape is replicated (take the first),
    otherwise the pieces are joined along the one dimension where they add up to it."""
    shards = [torch_checkpoint_tensors(f) for f in files]
    names = [n for n in shards[0] if n not in IGNORED]
    if len(shards) == 1:
        return {n: shards[0][n] for n in names}
    out = {}
    for name in names:
        pieces = [s.get(name) for s in shards]
        if any(p is None for p in pieces):
            raise CheckpointError(f"{name} is missing from some of the consolidated.NN.pth shards: download them again")
        full = expected.get(name)
        if full is None or pieces[0].shape == full:
            out[name] = pieces[0]
            continue
        dims = [d for d in range(len(full)) if sum(p.shape[d] for p in pieces) == full[d]
                and all(p.shape[:d] + p.shape[d + 1:] == full[:d] + full[d + 1:] for p in pieces)]
        if not dims:
            raise CheckpointError(f"{name}: the shards' pieces {[p.shape for p in pieces]} do not make up the shape "
                                  f"{full} that params.json implies")
        out[name] = LazyTensor(full, pieces[0].dtype,
                               lambda pieces=pieces, d=dims[0]: torch.cat([p.load() for p in pieces], dim=d))
    return out


def is_tied(tensors: dict[str, LazyTensor]) -> bool:
    """Whether the unembedding is the input embedding's very tensor (torch.save keeps shared storage shared). The
    memory-mapped tensors are compared by address: nothing is read."""
    emb, out = tensors.get("tok_embeddings.weight"), tensors.get("output.weight")
    if emb is None or out is None or emb.shape != out.shape:
        return False
    a, b = emb.load(), out.load()
    return a.data_ptr() == b.data_ptr() and a.stride() == b.stride()


def params_for(config: ModelConfig) -> dict:
    """params.json for a model (the inverse of `read_params`). One-line errors for what Meta's format cannot say."""
    switched = config.block_switches()
    if switched:
        raise CheckpointError(f"Meta's format holds Llama blocks only, and this model sets {', '.join(switched)}: "
                              "export it with --format hf")
    if config.head_dim is not None and config.head_dim * config.n_head != config.d_model:
        raise CheckpointError(f"Meta's format has no head_dim: this model's heads are {config.head_dim} wide, not "
                              f"d_model / n_head; export it with --format hf")
    scaling = config.rope_scaling
    if scaling is not None and {k: v for k, v in scaling.items() if k != "factor"} != \
            {k: v for k, v in LLAMA31_SCALING.items() if k != "factor"}:
        raise CheckpointError("Meta's format only has Llama 3.1's rotary scaling (use_scaled_rope): export this "
                              "model with --format hf")
    multiple_of, multiplier = ffn_rule_for(config.d_model, config.ffn_dim)
    params = {"dim": config.d_model, "n_layers": config.n_layer, "n_heads": config.n_head,
              "n_kv_heads": config.kv_heads, "vocab_size": config.vocab_size, "multiple_of": multiple_of,
              "ffn_dim_multiplier": multiplier, "norm_eps": config.norm_eps, "rope_theta": config.rope_theta,
              "max_seq_len": config.max_seq_len, "n_future_tokens": config.n_future}
    if scaling is not None:
        params.update(use_scaled_rope=True, rope_scaling_factor=scaling["factor"])
    return params
