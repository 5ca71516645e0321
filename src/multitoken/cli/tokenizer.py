"""`multitoken tokenizer train`: a byte-level BPE tokenizer trained on your text, for `prepare` and `train`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from jsonargparse import Namespace

from multitoken.cli.common import add_command_group, new_parser
from multitoken.cli.prepare import human_bytes
from multitoken.errors import ConfigError


def add_parser(subcommands) -> None:
    inner = add_command_group(subcommands, "tokenizer", "Tokenizers: train a byte-level BPE on your corpus.",
                              "Train a BPE tokenizer.")

    train = new_parser("Train a byte-level BPE (GPT-2 style: any text encodes, decoding is exact) with "
                       "<|endoftext|> as id 0, streaming over text files and folders, .jsonl and .parquet files. "
                       "Writes OUT/tokenizer.json and OUT/tokenizer_config.json; use it as --tokenizer OUT.")
    train.add_argument("--data", type=str, nargs="+", required=True, help="Files and folders to train on.")
    train.add_argument("--vocab_size", type=int, required=True,
                       help="Vocabulary size, including the 256 bytes and <|endoftext|>.")
    train.add_argument("--out", type=str, required=True, help="Folder to write the tokenizer into.")
    train.add_argument("--min_frequency", type=int, default=2,
                       help="Merge only pairs seen at least this often.")
    train.add_argument("--max_bytes", type=int | None, default=None,
                       help="Train on about the first this many bytes of text; default: all of it.")
    train.add_argument("--jsonl_field", type=str, default="text", help="JSONL field with the text.")
    train.add_argument("--parquet_column", type=str, default="text",
                       help="Parquet column with the text.")
    inner.add_subcommand("train", train, help="Train a byte-level BPE tokenizer.")


def _save(tokenizer, out: Path) -> None:
    """Both files into OUT, each renamed into place whole."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for tokenizer.json and tokenizer_config.json")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer.tmp-", dir=out))
    try:
        tokenizer.save(tmp)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_train(args: Namespace) -> int:
    from multitoken.data.bpe import train_bpe_on_sources
    from multitoken.data.documents import check_sources, find_document_sources
    from multitoken.errors import ConfigError

    out = Path(args.out).expanduser()
    if (out / "tokenizer.json").exists():
        raise ConfigError(f"{out} already holds a tokenizer.json: choose another --out, or delete it to retrain")
    if args.max_bytes is not None and args.max_bytes < 1:
        raise ConfigError(f"--max-bytes must be at least 1 (got {args.max_bytes})")
    sources = find_document_sources(args.data)
    check_sources(sources, args.parquet_column)
    result = train_bpe_on_sources(sources, args.vocab_size, args.min_frequency, args.max_bytes, args.jsonl_field,
                                  args.parquet_column)
    _save(result.tokenizer, out)
    print(f"trained byte-level BPE: {result.tokenizer.vocab_size:,} tokens from {human_bytes(result.bytes_read)} "
          f"({result.documents:,} documents) in {result.seconds:.1f} s -> {out}")
    return 0


def run(args: Namespace) -> int:
    return {"train": _run_train}[args.tokenizer](args[args.tokenizer])
