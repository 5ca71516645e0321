"""Reading a model folder of any supported format into one description: its ModelConfig, its tensors under our
names (unread), and its tokenizer, everything checked against everything else before a byte of weights is read.

    multitoken   a checkpoint (model.safetensors + config.yaml), or a run directory
    hf           config.json + model.safetensors or shards with model.safetensors.index.json (+ mtp_heads.*)
    meta         params.json + consolidated.pth or consolidated.NN.pth
    gguf         one llama.cpp .gguf file (its tokenizer and chat template in the metadata)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from multitoken.config import ModelConfig
from multitoken.data.tokenizer import Tokenizer, build_tokenizer
from multitoken.errors import CheckpointError, ConfigError
from multitoken.interop import gguf_file, hf, meta
from multitoken.interop.tensors import LazyTensor, safetensors_tensors
from multitoken.interop.tokenizers import tokenizer_from_folder
from multitoken.model import MTPModel

Format = Literal["multitoken", "hf", "meta", "gguf"]


@dataclass
class ImportedModel:
    config: ModelConfig
    tensors: dict[str, LazyTensor]  # our names; a tied unembedding only as tok_embeddings.weight
    tokenizer: Tokenizer
    format: Format
    path: Path
    notes: list[str] = field(default_factory=list)

    @property
    def source_dtype(self) -> torch.dtype:
        return self.tensors["tok_embeddings.weight"].dtype


def detect_format(path: Path) -> Format:
    from multitoken.checkpoint import list_checkpoints

    if not path.exists():
        raise CheckpointError(f"{path} does not exist: pass a Hugging Face model folder, a Meta folder "
                              "(params.json), a .gguf file or a multitoken checkpoint")
    if gguf_file.is_gguf(path):
        return "gguf"
    if (path / "model.safetensors").is_file() and (path / "config.yaml").is_file() or list_checkpoints(path):
        return "multitoken"
    if (path / hf.CONFIG_FILE).is_file():
        return "hf"
    if (path / meta.PARAMS_FILE).is_file():
        return "meta"
    held = sorted(p.name for p in path.iterdir() if gguf_file.is_gguf(p)) if path.is_dir() else []
    if held:
        raise CheckpointError(f"{path} is a folder holding the GGUF file{'s' if len(held) > 1 else ''} "
                              f"{', '.join(held[:3])}: point at the .gguf file itself")
    raise CheckpointError(f"{path} is neither a Hugging Face model folder (config.json) nor a Meta folder "
                          "(params.json) nor a GGUF file nor a multitoken checkpoint: point at the folder (or file) "
                          "that holds those files")


def expected_shapes(config: ModelConfig, with_tied_output: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor the model holds, by our name, with its shape (computed on the meta device: no memory). A tied
    unembedding is the input embedding, so it is left out unless asked for."""
    with torch.device("meta"):
        state = MTPModel(config).state_dict()
    if config.tie_embeddings and not with_tied_output:
        state.pop("output.weight")
    return {name: tuple(t.shape) for name, t in state.items()}


def check_tensors(tensors: dict[str, LazyTensor], config: ModelConfig, where: str, describe) -> None:
    """Every expected tensor present with its shape, nothing unexplained left over. describe(name) gives the name as
    the source file spells it."""
    expected = expected_shapes(config)
    for name, shape in expected.items():
        if name not in tensors:
            raise CheckpointError(f"{where} lacks tensor {describe(name)}: the weights do not match the config "
                                  "(a missing or wrong file)")
        if tensors[name].shape != shape:
            raise CheckpointError(f"{where}: tensor {describe(name)} has shape {tensors[name].shape}, but the config "
                                  f"implies {shape}: the weights and the config contradict each other")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{where} has tensor {describe(extra[0])} that the config does not account for "
                              f"({len(extra)} such): the weights do not match the config")


def _import_hf(folder: Path, max_seq_len: int | None) -> tuple[ModelConfig, dict[str, LazyTensor], list[str], dict]:
    config, notes, raw = hf.read_config(folder, max_seq_len)
    found: dict[str, LazyTensor] = {}
    for path in hf.weight_files(folder):
        found.update(safetensors_tensors(path))
    if config.n_future > 1:
        found.update(safetensors_tensors(folder / hf.HEADS_FILE))
    by_hf_name = {hf.hf_name(ours, config)[1]: ours for ours in expected_shapes(config, with_tied_output=True)}
    tensors: dict[str, LazyTensor] = {}
    for name, lazy in found.items():
        if name.endswith(hf.IGNORED_SUFFIXES):
            continue
        if name == "lm_head.weight" and config.tie_embeddings:
            continue  # some tied models store the shared matrix twice
        ours = by_hf_name.get(name, f"?{name}")
        heads = hf.qk_rows(ours, config)
        if heads is not None:  # transformers' rotate-half rows back to Meta's interleaved pairs
            lazy = lazy.map(lambda w, h=heads: hf.halves_to_interleaved(w, h, config.head_size))
        tensors[ours] = lazy
    reverse = {v: k for k, v in by_hf_name.items()}
    check_tensors(tensors, config, str(folder), lambda n: reverse.get(n, n.lstrip("?")))
    return config, tensors, notes, raw


def _import_meta(folder: Path, max_seq_len: int | None) -> tuple[ModelConfig, dict[str, LazyTensor], list[str]]:
    config, notes, files = meta.read_params(folder, max_seq_len)
    tensors = meta.read_tensors(files, expected_shapes(config))
    if len(files) == 1 and meta.is_tied(tensors):  # saved as one tensor under both names (an export of a tied model): keep it tied
        config = dataclasses.replace(config, tie_embeddings=True)
        del tensors["output.weight"]
    check_tensors(tensors, config, str(folder), lambda n: n)
    return config, tensors, notes


def _import_gguf(path: Path, max_seq_len: int | None,
                 with_tokenizer: bool) -> tuple[ModelConfig, dict[str, LazyTensor], Tokenizer | None]:
    """A GGUF file's config, tensors and (unless another is given) the tokenizer its metadata describes."""
    reader = gguf_file.open_reader(path)
    config = gguf_file.read_config(path, reader, max_seq_len)
    tensors = gguf_file.read_tensors(path, reader, config)
    check_tensors(tensors, config, str(path), lambda n: n)
    return config, tensors, gguf_file.read_tokenizer(path, reader) if with_tokenizer else None


def read_model_folder(path: str | Path, tokenizer: str | None = None,
                      max_seq_len: int | None = None) -> ImportedModel:
    """An HF or Meta folder, checked: config, every tensor's name and shape, and the tokenizer. Reads no weights."""
    path = Path(path).expanduser()
    kind = detect_format(path)
    if kind == "multitoken":
        raise CheckpointError(f"{path} is already a multitoken checkpoint: use it as it is")
    if max_seq_len is not None and max_seq_len < 1:
        raise ConfigError(f"--max-seq-len must be at least 1 (got {max_seq_len})")
    raw, tok = None, None
    if kind == "hf":
        config, tensors, notes, raw = _import_hf(path, max_seq_len)
    elif kind == "gguf":
        config, tensors, tok = _import_gguf(path, max_seq_len, with_tokenizer=tokenizer is None)
        notes = []
    else:
        config, tensors, notes = _import_meta(path, max_seq_len)
    if tokenizer is not None:
        tok = build_tokenizer(tokenizer)
    elif tok is None:  # Meta's releases keep tokenizer.model beside the model folders
        tok = tokenizer_from_folder(path, raw) or (tokenizer_from_folder(path.parent) if kind == "meta" else None)
    if tok is None:
        raise CheckpointError(f"{path} has no tokenizer.json or tokenizer.model: pass --tokenizer with the model's "
                              "tokenizer (a tokenizer.json or tokenizer.model, or a folder holding one)")
    if tok.vocab_size > config.vocab_size:
        raise CheckpointError(f"the tokenizer has {tok.vocab_size} tokens but the model only {config.vocab_size}: "
                              "they do not belong together (pass the model's own with --tokenizer)")
    return ImportedModel(config, tensors, tok, kind, path, notes)
