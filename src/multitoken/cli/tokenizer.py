"""`multitoken tokenizer train`: a byte-level BPE tokenizer trained on your text, for `prepare` and `train`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

from jsonargparse import Namespace

from multitoken.cli.common import add_command_group, call, command_parser
from multitoken.cli.prepare import human_bytes
from multitoken.errors import ConfigError


def add_parser(subcommands) -> None:
    inner = add_command_group(subcommands, "tokenizer", "Tokenizers: train a byte-level BPE on your corpus.",
                              "Train a BPE tokenizer.")
    train = command_parser(train_tokenizer, skip=("data",))
    train.add_argument("--data", type=str, nargs="+", required=True,  # several paths after one flag
                       help="Files and folders to train on.")
    inner.add_subcommand("train", train, help="Train a byte-level BPE tokenizer.")


def train_tokenizer(data: list[str], vocab_size: int, out: str, min_frequency: int = 2, max_bytes: int | None = None,
                    jsonl_field: str = "text", parquet_column: str = "text") -> int:
    """Train a byte-level BPE (GPT-2 style: any text encodes, decoding is exact) with <|endoftext|> as id 0,
    streaming over text files and folders, .jsonl and .parquet files. Writes OUT/tokenizer.json and
    OUT/tokenizer_config.json; use it as --tokenizer OUT.

    Args:
        data: Files and folders to train on.
        vocab_size: Vocabulary size, including the 256 bytes and <|endoftext|>.
        out: Folder to write the tokenizer into.
        min_frequency: Merge only pairs seen at least this often.
        max_bytes: Train on about the first this many bytes of text; default: all of it.
        jsonl_field: JSONL field with the text.
        parquet_column: Parquet column with the text.
    """
    return _run_train(SimpleNamespace(**locals()))


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


def _run_train(args: SimpleNamespace) -> int:
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
    return call({"train": train_tokenizer}[args.tokenizer], args[args.tokenizer])
