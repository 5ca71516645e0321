"""GGUF files (llama.cpp's format): the config from the metadata, the tensors dequantized one at a time, and the
tokenizer the metadata describes, read through the `gguf` package (llama.cpp's own reader and dequantizers).

Tensor layout: for `llama` files, llama.cpp's converter permutes the rows of q and k within each attention head
from transformers' rotate-half order to Meta's interleaved pairs, which is the order our model uses, so they are
taken as they are; `qwen2`, `qwen3` and `gemma3` files keep transformers' rows (llama.cpp rotates those halves
apart), which are permuted here as for a Hugging Face folder; Gemma's norm gains are stored as 1 + w. The tests
compare logits with transformers' GGUF loader, which undoes each of these itself, rather than trust this.
GGUF lists dimensions innermost first; the reader's arrays already have numpy's (rows, columns) shape.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from multitoken.config import ModelConfig
from multitoken.data.tokenizer import BPETokenizer, Tokenizer, require_tokenizers
from multitoken.errors import CheckpointError
from multitoken.interop import families, hf
from multitoken.interop.tensors import LazyTensor

SUFFIX = ".gguf"
# Quantizations read (the gguf package dequantizes each of them in numpy); others are refused up front.
QUANT_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

TOP_NAMES = {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight",
             "output.weight": "output.weight"}
IGNORED = ("rope_freqs.weight",)  # checked in read_config, never a weight of ours

# The split each `tokenizer.ggml.pre` names, where it is not GPT-2's own (the ByteLevel pre-tokenizer's regex).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_SPLITS = {"llama3": LLAMA3_SPLIT, "llama-v3": LLAMA3_SPLIT, "llama-bpe": LLAMA3_SPLIT, "smaug-bpe": LLAMA3_SPLIT,
              "qwen2": QWEN2_SPLIT}
GPT2_PRES = ("default", "gpt2", "gpt-2", "smollm", "starcoder", "refact", "olmo")
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4  # llama.cpp's token types


MAGIC = b"GGUF"  # every GGUF file's first four bytes


def is_gguf(path: Path) -> bool:
    """A GGUF file by its suffix or, under any other name, by its first bytes."""
    if not path.is_file():
        return False
    if path.suffix.lower() == SUFFIX:
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def open_reader(path: Path):
    try:
        import gguf
    except ImportError:
        raise CheckpointError("reading GGUF files needs the gguf package: pip install 'multitoken[gguf]'") from None
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError, struct errors or IndexError on damaged files
        raise CheckpointError(f"{path} is not a readable GGUF file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:100] if str(e) else 'truncated or damaged'}): "
                              "download it again") from None


def field_value(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def family_of(path: Path, reader) -> families.Family:
    arch = field_value(reader, "general.architecture", "unknown")
    family = families.BY_GGUF_ARCHITECTURE.get(arch)
    if family is None:
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not supported; multitoken reads "
                              f"{', '.join(families.BY_GGUF_ARCHITECTURE)} GGUF files")
    return family


def read_config(path: Path, reader, max_seq_len: int | None) -> ModelConfig:
    family = family_of(path, reader)
    arch = family.gguf_architecture
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise CheckpointError(f"{path} scales its rotary frequencies with a rope_freqs tensor (Llama 3.1 style), "
                              "which multitoken cannot read from GGUF: convert the model's Hugging Face folder")
    scaling = None
    if field_value(reader, f"{arch}.rope.scaling.type", "none") not in ("none", None):
        kind = field_value(reader, f"{arch}.rope.scaling.type")
        if kind != "linear":
            raise CheckpointError(f"{path}: rotary scaling {kind!r} is not supported (multitoken reads linear)")
        scaling = {"rope_type": "linear", "factor": float(field_value(reader, f"{arch}.rope.scaling.factor"))}
    try:
        d_model = int(field_value(reader, f"{arch}.embedding_length"))
        n_head = int(field_value(reader, f"{arch}.attention.head_count"))
        n_kv = int(field_value(reader, f"{arch}.attention.head_count_kv", n_head))
        head_dim = int(field_value(reader, f"{arch}.attention.key_length", field_value(reader, f"{arch}.rope.dimension_count",
                                                                               d_model // n_head)))
        vocab = int(field_value(reader, f"{arch}.vocab_size", 0) or _embedding_rows(reader))
        context = int(field_value(reader, f"{arch}.context_length", 2048))
        n_layers = int(field_value(reader, f"{arch}.block_count"))
        window, sliding_layers, local_theta = None, None, None
        if family.name == "gemma3":  # llama.cpp's Gemma 3: every 6th layer global, the others windowed at base 10k
            window = int(field_value(reader, f"{arch}.attention.sliding_window", 4096))
            pattern = int(field_value(reader, f"{arch}.attention.sliding_window_pattern", 6))
            sliding_layers = [i for i in range(n_layers) if (i + 1) % pattern]
            local_theta = float(field_value(reader, f"{arch}.rope.freq_base_swa", 10000.0))
        config = families.configure(
            family,
            vocab_size=vocab, d_model=d_model, n_layer=n_layers, n_head=n_head,
            n_kv_head=None if n_kv == n_head else n_kv, head_dim=None if head_dim * n_head == d_model else head_dim,
            n_future=1, max_seq_len=max_seq_len or context,
            ffn_hidden=int(field_value(reader, f"{arch}.feed_forward_length")),
            rope_theta=float(field_value(reader, f"{arch}.rope.freq_base", 1e6 if family.name == "gemma3" else 10000.0)),
            rope_scaling=scaling, norm_eps=float(field_value(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
            tie_embeddings="output.weight" not in names, sliding_window=window, sliding_layers=sliding_layers, rope_local_theta=local_theta)
    except TypeError:
        raise CheckpointError(f"{path}: its metadata lacks the model's shape ({arch}.block_count, "
                              f"{arch}.embedding_length, ...): not a complete GGUF model file") from None
    except ValueError as e:
        raise CheckpointError(f"{path} describes a model multitoken cannot build: {e}") from None
    return config


def our_name(gguf_name: str) -> str | None:
    if gguf_name in TOP_NAMES:
        return TOP_NAMES[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(2) in families.GGUF_BLOCK_NAMES:
        return f"layers.{m.group(1)}.{families.GGUF_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"
    return None


def _embedding_rows(reader) -> int:
    """The vocabulary size as the files' own metadata gives it (its tokens), else as the embedding's rows (a file
    without tokenizer metadata, used with --tokenizer)."""
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None and len(tokens.data):
        return len(tokens.data)
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            return int(t.shape.tolist()[-1])  # GGUF lists dimensions innermost first: (d_model, vocab)
    return 0


def read_tensors(path: Path, reader, config: ModelConfig) -> dict[str, LazyTensor]:
    """Every weight under our name, dequantized to float32 only when loaded, in our layout (q/k rows, norm gains).
    Unsupported types and unknown tensors are refused here, before anything is read or written."""
    from gguf import quants

    family = family_of(path, reader)
    out = {}
    for t in reader.tensors:
        if t.name in IGNORED:
            continue
        kind = t.tensor_type.name
        if kind not in QUANT_TYPES:
            raise CheckpointError(f"{path}: tensor {t.name} is stored as {kind}, which multitoken does not dequantize "
                                  f"(it reads {', '.join(QUANT_TYPES)}): use a file quantized to one of those")
        ours = our_name(t.name)
        if ours is None:
            raise CheckpointError(f"{path} has tensor {t.name}, which a {family.gguf_architecture} model does not "
                                  "have: the file is not a plain one of its kind (or it is damaged)")
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        if len(shape) == 2 and shape[0] == 1 and t.name.endswith(("norm.weight", ".bias")):
            shape = shape[1:]
        heads = hf.qk_rows(ours, config) if family.gguf_rotate_half else None
        shift = family.gguf_norm_shift if t.name.endswith("norm.weight") else 0.0

        def load(t=t, shape=shape, heads=heads, shift=shift) -> torch.Tensor:
            values = quants.dequantize(np.asarray(t.data), t.tensor_type)
            w = torch.from_numpy(np.array(values, dtype=np.float32)).reshape(shape)  # a copy: the map is read-only
            if shift:
                w -= shift
            return hf.halves_to_interleaved(w, heads, config.head_size) if heads is not None else w

        out[ours] = LazyTensor(shape, torch.float32, load)
    return out


def _byte_level_bpe(tokens: list[str], merges: list[str], pre: str):
    tk = require_tokenizers()
    model = tk.models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                          merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False)
    tokenizer = tk.Tokenizer(model)
    split = PRE_SPLITS.get(pre)
    if split is not None:
        tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([
            tk.pre_tokenizers.Split(tk.Regex(split), behavior="isolated"),
            tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = tk.decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(tokens: list[str], scores: list[float], unk_id: int | None):
    """SentencePiece-style (`llama`) vocabularies: a BPE over '▁'-spelled pieces with byte fallback, the merges
    recovered from the pieces' scores (a merge ranks as the piece it makes)."""
    tk = require_tokenizers()
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for piece, score in zip(tokens, scores):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((score, vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    model = tk.models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], byte_fallback=True, fuse_unk=True,
                          unk_token=tokens[unk_id] if unk_id is not None else None)
    tokenizer = tk.Tokenizer(model)
    tokenizer.normalizer = tk.normalizers.Sequence([tk.normalizers.Prepend("▁"),
                                                    tk.normalizers.Replace(" ", "▁")])
    tokenizer.decoder = tk.decoders.Sequence([tk.decoders.Replace("▁", " "), tk.decoders.ByteFallback(),
                                              tk.decoders.Fuse(), tk.decoders.Strip(" ", 1, 0)])
    return tokenizer


def read_tokenizer(path: Path, reader) -> Tokenizer:
    kind = field_value(reader, "tokenizer.ggml.model")
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    if kind is None or not tokens:
        raise CheckpointError(f"{path} carries no tokenizer (tokenizer.ggml.*): pass --tokenizer with the model's "
                              "tokenizer.json")
    types = field_value(reader, "tokenizer.ggml.token_type") or []
    if kind == "gpt2":
        merges = field_value(reader, "tokenizer.ggml.merges") or []
        pre = field_value(reader, "tokenizer.ggml.pre", "default")
        if pre not in PRE_SPLITS and pre not in GPT2_PRES:
            raise CheckpointError(f"{path}: its tokenizer splits text the {pre!r} way, which multitoken does not know: "
                                  "pass --tokenizer with the model's tokenizer.json")
        tokenizer = _byte_level_bpe(tokens, merges, pre)
    elif kind == "llama":
        scores = field_value(reader, "tokenizer.ggml.scores") or [0.0] * len(tokens)
        tokenizer = _sentencepiece_bpe(tokens, scores, field_value(reader, "tokenizer.ggml.unknown_token_id"))
    else:
        raise CheckpointError(f"{path}: tokenizer kind {kind!r} is not supported (multitoken reads gpt2 and llama "
                              "vocabularies from GGUF): pass --tokenizer with the model's tokenizer.json")
    tk = require_tokenizers()
    special = [tk.AddedToken(t, special=True, normalized=False) for t, kind in zip(tokens, types) if kind == TOKEN_CONTROL]
    tokenizer.add_special_tokens(special)
    tokenizer.add_tokens([tk.AddedToken(t, normalized=False) for t, kind in zip(tokens, types)
                          if kind == TOKEN_USER_DEFINED])
    eos_id = field_value(reader, "tokenizer.ggml.eos_token_id")
    bos_id = field_value(reader, "tokenizer.ggml.bos_token_id")
    add_bos = bool(field_value(reader, "tokenizer.ggml.add_bos_token", kind == "llama"))
    if eos_id is None:
        raise CheckpointError(f"{path}: its tokenizer names no end-of-sequence token (tokenizer.ggml.eos_token_id)")
    # llama.cpp's end-of-turn and end-of-message tokens (Gemma's <end_of_turn>) end a generation as eos does
    stops = [tokens[i] for i in (field_value(reader, "tokenizer.ggml.eot_token_id"),
                                 field_value(reader, "tokenizer.ggml.eom_token_id")) if i is not None and 0 <= i < len(tokens)]
    return BPETokenizer(tokenizer, tokens[eos_id], source=str(path),
                        bos_token=tokens[bos_id] if add_bos and bos_id is not None else None,
                        chat_template=field_value(reader, "tokenizer.chat_template"), stop_tokens=stops)
