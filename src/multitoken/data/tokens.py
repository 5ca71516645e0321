"""Tokenized corpora cached as flat numpy memmaps: `train.bin` and `val.bin`, documents separated by an end-of-text id.

The cache is keyed on the tokenizer (its fingerprint), the split and every source file's path, size and modification
time, so a changed corpus is re-tokenized and an unchanged one is opened instantly. A cache is built under a temporary
name and renamed into place: an interrupted build never leaves a half-written cache behind. Files are read in bounded
segments (documents.py), so a BPE tokenizer never sees a whole large file at once.

This is the zero-setup path for a folder of text. Large corpora, JSONL and Parquet go through `multitoken prepare`;
`resolve_data` picks whichever the config points at.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multitoken.config import DataConfig
from multitoken.data.corpus import SourceFile, find_sources, split_sources
from multitoken.data.documents import Piece, Source, read_segments
from multitoken.data.tokenizer import ByteTokenizer, Tokenizer, build_tokenizer
from multitoken.errors import ConfigError, DataError

CACHE_VERSION = 1
BYTES_EOT = ByteTokenizer.eot_id  # NUL separates byte-level documents (see ByteTokenizer)


@dataclass
class TokenData:
    train: np.ndarray  # 1-D memmap of token ids
    val: np.ndarray
    meta: dict


def cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("MULTITOKEN_CACHE") or Path.home() / ".cache" / "multitoken"
    return Path(root).expanduser() / "tokens"


def _cache_key(sources: list[SourceFile], tokenizer: Tokenizer, cfg: DataConfig) -> str:
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "tokenizer": tokenizer.kind,
                                   "fingerprint": tokenizer.fingerprint, "val_fraction": cfg.val_fraction}).encode())
    for s in sources:
        st = s.path.stat()
        h.update(f"{s.key}\0{s.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def _file_tokens(source: SourceFile, tokenizer: Tokenizer) -> Iterator[np.ndarray]:
    """One file's tokens, tokenized 256 kB at a time in segments cut so that the tokens are exactly those
    of the whole file (see documents.py)."""
    st = source.path.stat()
    whole = Piece(Source(source.path, source.key, "text", st.st_size, st.st_mtime_ns), 0, st.st_size, st.st_size)
    batch, size = [], 0
    for segment in read_segments(whole):
        batch.append(segment.text)
        size += len(segment.text)
        if size >= 1 << 18:  # the tokenizer's working memory is ~100x the text it is given
            yield from tokenizer.encode_batch(batch)
            batch, size = [], 0
    if batch:
        yield from tokenizer.encode_batch(batch)


def _write_split(path: Path, sources: list[SourceFile], tokenizer: Tokenizer) -> int:
    count = 0
    eot = np.array([tokenizer.eot_id], dtype=tokenizer.dtype)
    with path.open("wb") as f:
        for s in sources:
            before = count
            for ids in _file_tokens(s, tokenizer):
                f.write(ids.astype(tokenizer.dtype, copy=False).tobytes())
                count += ids.size
            if count > before:  # an empty file is no document
                f.write(eot.tobytes())
                count += 1
    return count


def _build(directory: Path, sources: list[SourceFile], tokenizer: Tokenizer, cfg: DataConfig) -> None:
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
            "eot_id": int(tokenizer.eot_id),
            "files": {"train": len(train_files), "val": len(val_files)}, "tokens": counts,
            "val_files": [s.key for s in val_files]}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_tokens(cfg: DataConfig, tokenizer: Tokenizer) -> TokenData:
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


def resolve_data(cfg: DataConfig, tokenizer: Tokenizer | None = None) -> tuple[Tokenizer, TokenData]:
    """The tokenizer and token data a config names: a folder written by `multitoken prepare` (its own tokenizer), or
    text files and folders tokenized through the cache with cfg.tokenizer.

    tokenizer: the one the data must be read with (a checkpoint's, for `eval`): text is tokenized with it, and
    prepared data made with another tokenizer is refused.
    """
    from multitoken.data.shards import is_prepared, open_prepared

    if cfg.path is not None and len(cfg.path) == 1 and is_prepared(Path(cfg.path[0]).expanduser()):
        prepared, data = open_prepared(cfg.path[0])
        if tokenizer is not None and tokenizer.fingerprint != prepared.fingerprint:
            raise ConfigError(f"{cfg.path[0]} was prepared with another tokenizer ({prepared.kind}, vocab "
                              f"{prepared.vocab_size}) than the checkpoint's ({tokenizer.kind}, vocab "
                              f"{tokenizer.vocab_size}): prepare the data with the tokenizer saved in the checkpoint "
                              "(multitoken prepare --tokenizer RUN/checkpoints/step_N)")
        if cfg.tokenizer != "bytes" and build_tokenizer(cfg.tokenizer).fingerprint != prepared.fingerprint:
            raise ConfigError(f"data.tokenizer {cfg.tokenizer} is not the tokenizer {cfg.path[0]} was prepared with "
                              f"({prepared.kind}, saved in {Path(cfg.path[0]) / 'tokenizer'}): leave data.tokenizer "
                              "at 'bytes' to use the prepared one, or prepare the data again with yours")
        return prepared, data
    tokenizer = tokenizer or build_tokenizer(cfg.tokenizer)
    return tokenizer, load_tokens(cfg, tokenizer)
