"""`multitoken.load_model(path)`: a model from a multitoken checkpoint, a Hugging Face folder, a Meta folder or a
GGUF file, in one call, for notebooks and scripts."""

from __future__ import annotations

from pathlib import Path

import torch

from multitoken.data.tokenizer import Tokenizer
from multitoken.model import MTPModel


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               max_seq_len: int | None = None) -> MTPModel:
    """The model in eval mode, on device, in dtype (None: the dtype it is stored in).

    path: a multitoken run or checkpoint directory, a Hugging Face Llama/Mistral/Qwen2/Qwen3/Gemma 3 folder
    (config.json), a Meta folder (params.json), or a llama.cpp .gguf file. max_seq_len overrides an imported model's context.
    """
    from multitoken.interop.source import detect_format, read_model_folder
    from multitoken.checkpoint import load_checkpoint

    path = Path(path).expanduser()
    if detect_format(path) == "multitoken":
        return load_checkpoint(path, device, dtype)[0]
    imported = read_model_folder(path, max_seq_len=max_seq_len)
    state = {name: lazy.load() for name, lazy in imported.tensors.items()}
    return MTPModel.from_state_dict(imported.config, state, device, dtype).eval()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a multitoken checkpoint, a Hugging Face folder or a Meta folder."""
    from multitoken.data.tokenizer import load_tokenizer as load_saved
    from multitoken.interop.source import detect_format, read_model_folder
    from multitoken.checkpoint import resolve_checkpoint

    path = Path(path).expanduser()
    if detect_format(path) == "multitoken":
        return load_saved(resolve_checkpoint(path))
    return read_model_folder(path).tokenizer
