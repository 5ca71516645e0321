"""Token data for training and evaluation: a prepared folder, or text files prepared into a cache on first use.

`multitoken prepare` is the one writer of token data. `train --data FOLDER` (and the built-in corpus) go through it
too, into `$MULTITOKEN_CACHE/tokens/<key>/`, keyed on the tokenizer, the split and the sources' paths: the first run
tokenizes, later ones find the folder up to date (prepare compares sizes and modification times, and re-tokenizes only
the units whose files changed), and a damaged one (a shard truncated by a full disk, say) is repaired the same way.
Whatever prepared it, the data is opened by one reader (shards.open_prepared), which checks every shard's size and,
as shards are first read, that their token ids fit the tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from multitoken.config import DataConfig
from multitoken.data.documents import default_corpus_sources, find_document_sources
from multitoken.data.prepare import PrepareOptions, prepare_sources
from multitoken.data.shards import TokenData, is_prepared, join_prepared, open_prepared
from multitoken.data.tokenizer import ByteTokenizer, Tokenizer, build_tokenizer
from multitoken.errors import ConfigError, DataError
from multitoken.files import file_lock, make_folder

CACHE_VERSION = 2  # 1: flat train.bin/val.bin caches of their own format; 2: prepared folders
BYTES_EOT = ByteTokenizer.eot_id  # NUL separates byte-level documents (see ByteTokenizer)


def cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("MULTITOKEN_CACHE") or Path.home() / ".cache" / "multitoken"
    return Path(root).expanduser() / "tokens"


def load_tokens(cfg: DataConfig, tokenizer: Tokenizer) -> TokenData:
    """cfg's text (or the built-in corpus) prepared into the cache, once, and opened."""
    sources = default_corpus_sources() if cfg.path is None else find_document_sources(cfg.path)
    if not sources:
        raise DataError("no source files found for the default corpus: pass --data.path with your own text")
    key = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "tokenizer": tokenizer.fingerprint,
                                     "val_fraction": cfg.val_fraction,
                                     "sources": [str(s.path.resolve()) for s in sources]}).encode())
    out = cache_root(cfg) / key.hexdigest()[:20]
    make_folder(out.parent, "--data.cache_dir" if cfg.cache_dir else "the token cache (--data.cache_dir)")
    # Ranks of one job, or two runs on the same text, prepare it once: the others wait, then find it up to date.
    with file_lock(out.parent / f".{out.name}.lock"):
        prepare_sources(sources, tokenizer, out, PrepareOptions(val_fraction=cfg.val_fraction))
    return open_prepared(out)[1]


def user_data_config(saved: DataConfig, paths: list[str] | None, flag: str) -> DataConfig:
    """The data `eval` and `bench` read for a checkpoint: the paths the user gave, or the built-in corpus where the
    checkpoint was trained on it. Paths, tokenizers and cache folders written inside a checkpoint's config.yaml are
    never followed: a downloaded checkpoint must not choose which local files are read or where copies are written.
    The split rule (val_fraction) is kept, so the training data named again gives the same validation split."""
    if paths is None and saved.path is not None:
        raise ConfigError(f"this checkpoint was trained on {' '.join(saved.path)}; multitoken does not read paths "
                          f"named inside a checkpoint: pass {flag} {' '.join(saved.path)} to use that data")
    return dataclasses.replace(saved, path=paths, cache_dir=None, tokenizer="bytes")


def resolve_data(cfg: DataConfig, tokenizer: Tokenizer | None = None) -> tuple[Tokenizer, TokenData]:
    """The tokenizer and token data a config names: folders written by `multitoken prepare` or `distill` (their own
    tokenizer, one for all), or text files and folders tokenized through the cache with cfg.tokenizer.

    tokenizer: the one the data must be read with (a checkpoint's, for `eval`): text is tokenized with it, and
    prepared data made with another tokenizer is refused.
    """
    prepared_paths = [p for p in cfg.path or [] if is_prepared(Path(p).expanduser())]
    if prepared_paths and len(prepared_paths) < len(cfg.path):
        text = next(p for p in cfg.path if p not in prepared_paths)
        tokenizer_dir = Path(prepared_paths[0]) / "tokenizer"
        raise ConfigError(f"--data mixes a prepared folder ({prepared_paths[0]}) with text ({text}): prepare the text "
                          f"first (multitoken prepare --data {text} --tokenizer {tokenizer_dir} --out DIR), then "
                          "list the prepared folders")
    if prepared_paths:
        # Several prepared folders (a first distillation and a second, say) are read as one corpus.
        prepared, data = join_prepared(prepared_paths)
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
