"""`convert`: a Hugging Face or Meta model folder -> an ordinary multitoken checkpoint folder.

The result is a checkpoint like any training run's (model.safetensors, config.yaml, the tokenizer, meta.json; no
optimizer state), so `generate`, `eval`, `info`, `bench decode` and `train --init-from` take it as they are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from multitoken.config import TrainConfig, to_dict
from multitoken.errors import CheckpointError, ConfigError
from multitoken.files import check_new_folder, new_folder
from multitoken.interop.source import ImportedModel, read_model_folder
from multitoken.interop.tensors import write_safetensors
from multitoken.training.checkpoint import weights_metadata

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Windows used by `eval` and as the finetuning default: a long-context model's whole context is rarely what a
# validation pass or a CPU finetune wants (`--seq_len` sets any other).
DEFAULT_WINDOW = 2048


@dataclass
class ConvertResult:
    model: ImportedModel
    out: Path
    dtype: torch.dtype
    bytes_written: int


def check_resources(model: ImportedModel, dtype: torch.dtype, out: Path) -> None:
    """Before writing: the disk under OUT holds the weights, and memory one tensor at a time (its stored form, fp32
    while dequantized, and the output copy), with one-line refusals naming the sizes."""
    import shutil

    from multitoken.training.memory import available_bytes

    def out_bytes(t) -> int:
        return math.prod(t.shape) * (dtype if t.dtype.is_floating_point else t.dtype).itemsize

    total = sum(out_bytes(t) for t in model.tensors.values())
    parent = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(parent).free
    if total > free:
        raise ConfigError(f"the converted weights take {total / 1e9:,.1f} GB but {parent} has {free / 1e9:,.1f} GB "
                          "free: free some space, choose another --out, or a smaller --dtype (bfloat16)")
    largest = max((math.prod(t.shape) for t in model.tensors.values()), default=0) * 4 * 3
    have = available_bytes("cpu")
    if have is not None and largest > have:
        raise ConfigError(f"converting needs about {largest / 1e9:,.1f} GB of memory for its largest tensor but the "
                          f"machine has {have / 1e9:,.1f} GB available: convert on a machine with more memory")


def convert(src: str | Path, out: str | Path, dtype: str | None = None, tokenizer: str | None = None,
            max_seq_len: int | None = None, progress: bool = False) -> ConvertResult:
    out = Path(out).expanduser()
    check_new_folder(out)
    model = read_model_folder(src, tokenizer, max_seq_len)  # everything checked before anything is written
    target = DTYPES[dtype] if dtype else model.source_dtype
    check_resources(model, target, out)
    cfg = TrainConfig(model=model.config, out_dir=str(out), seq_len=min(model.config.max_seq_len, DEFAULT_WINDOW))
    with new_folder(out) as tmp:
        try:
            written = write_safetensors(tmp / "model.safetensors", model.tensors, target,
                                        metadata=weights_metadata(model.config, converted_from=model.format),
                                        progress="convert" if progress else None)
        except CheckpointError as e:  # nothing is left behind: the folder was being built aside
            raise CheckpointError(f"{model.path}: {e}") from None
        (tmp / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        model.tokenizer.save(tmp)
        meta = {"step": 0, "tokens_seen": 0, "converted_from": str(model.path.resolve()),
                "source_format": model.format, "dtype": str(target).removeprefix("torch.")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return ConvertResult(model, out, target, written)
