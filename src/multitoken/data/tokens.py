"""Tokenized corpora cached as flat numpy memmaps: `train.bin` and `val.bin`, documents separated by an end-of-text id.

The cache is keyed on the tokenizer, the split and every source file's path, size and modification time, so a
changed corpus is re-tokenized and an unchanged one is opened instantly. A cache is built under a temporary name and
renamed into place: an interrupted build never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multitoken.config import DataConfig
from multitoken.data.corpus import SourceFile, find_sources, split_sources
from multitoken.data.tokenizer import ByteTokenizer
from multitoken.errors import DataError

CACHE_VERSION = 1
# Byte-level documents are separated by NUL: it never occurs in the text files we read (that is how binary files are
# told apart), so it is free to mark a document boundary.
BYTES_EOT = 0


@dataclass
class TokenData:
    train: np.ndarray  # 1-D memmap of token ids
    val: np.ndarray
    meta: dict


def cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("MULTITOKEN_CACHE") or Path.home() / ".cache" / "multitoken"
    return Path(root).expanduser() / "tokens"


def _cache_key(sources: list[SourceFile], tokenizer: ByteTokenizer, cfg: DataConfig) -> str:
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "tokenizer": tokenizer.kind,
                                   "val_fraction": cfg.val_fraction}).encode())
    for s in sources:
        st = s.path.stat()
        h.update(f"{s.key}\0{s.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _write_split(path: Path, sources: list[SourceFile], tokenizer: ByteTokenizer) -> int:
    count = 0
    with path.open("wb") as f:
        for s in sources:
            ids = tokenizer.encode_bytes(s.read())
            if ids.size == 0:
                continue
            f.write(ids.astype(tokenizer.dtype).tobytes())
            f.write(np.array([BYTES_EOT], dtype=tokenizer.dtype).tobytes())
            count += ids.size + 1
    return count


def _build(directory: Path, sources: list[SourceFile], tokenizer: ByteTokenizer, cfg: DataConfig) -> None:
    train_files, val_files = split_sources(sources, cfg.val_fraction)
    counts = {"train": _write_split(directory / "train.bin", train_files, tokenizer),
              "val": _write_split(directory / "val.bin", val_files, tokenizer)}
    if not val_files:  # a single file: hold out its tail instead, so there is still something to validate on
        whole = np.fromfile(directory / "train.bin", dtype=tokenizer.dtype)
        cut = int(len(whole) * (1 - cfg.val_fraction))
        whole[:cut].tofile(directory / "train.bin")
        whole[cut:].tofile(directory / "val.bin")
        counts = {"train": cut, "val": len(whole) - cut}
    meta = {"version": CACHE_VERSION, "tokenizer": tokenizer.kind, "dtype": np.dtype(tokenizer.dtype).name,
            "files": {"train": len(train_files), "val": len(val_files)}, "tokens": counts,
            "val_files": [s.key for s in val_files]}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_tokens(cfg: DataConfig, tokenizer: ByteTokenizer) -> TokenData:
    """Tokenize cfg's corpus into the cache (once) and open both splits as read-only memmaps."""
    sources = find_sources(cfg.path)
    if not sources:
        raise DataError("no source files found for the default corpus: pass --data.path with your own text")
    directory = cache_root(cfg) / _cache_key(sources, tokenizer, cfg)
    if not (directory / "meta.json").exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".tmp-", dir=directory.parent))
        try:
            _build(tmp, sources, tokenizer, cfg)
            try:
                os.rename(tmp, directory)
            except OSError:  # another process finished the same cache first; theirs is as good as ours
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    meta = json.loads((directory / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    open_split = lambda name: (np.memmap(directory / f"{name}.bin", dtype=dtype, mode="r")  # noqa: E731
                               if meta["tokens"][name] else np.zeros(0, dtype=dtype))
    return TokenData(train=open_split("train"), val=open_split("val"), meta={**meta, "cache": str(directory)})
