"""`multitoken prepare`: tokenize a corpus once into shards that training memory-maps (`train --data OUT`)."""

from __future__ import annotations

from types import SimpleNamespace
import os
import sys
from typing import Literal

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser


def add_parser(subcommands) -> None:
    parser = command_parser(prepare_corpus, skip=('data',))
    parser.add_argument("--data", type=str, nargs="+", required=True,  # several paths after one flag
                        help="Files and folders: text (one document per file), .jsonl (one per line), .parquet (one "
                             "per row).")
    subcommands.add_subcommand("prepare", parser, help="Tokenize a corpus into shards for training.")


def prepare_corpus(data: list[str], out: str, tokenizer: str = "bytes", val_fraction: float = 0.02, workers: int | None = None,
                   jsonl_field: str = "text", parquet_column: str = "text", shard_tokens: int = 1 << 27,
                   dtype: Literal["auto", "uint8", "uint16", "uint32"] = "auto") -> int:
    """Tokenize text files and folders, .jsonl and .parquet files once into token shards for training: streaming
    (bounded memory), parallel, resumable. Rerunning over a finished OUT is a no-op; an interrupted run redoes only
    the missing shards. Train with `--data OUT`.

    Args:
        data: Files and folders: text (one document per file), .jsonl (one per line), .parquet (one per row).
        out: Output folder (new, empty, or an earlier prepare).
        tokenizer: 'bytes', or a tokenizer folder / tokenizer.json (`multitoken tokenizer train`).
        val_fraction: Share of documents held out for validation (by a hash of each document's name).
        workers: Worker processes; default: one per CPU core.
        jsonl_field: JSONL field with the text.
        parquet_column: Parquet column with the text.
        shard_tokens: Most tokens in one shard file.
        dtype: Token id type on disk; auto: the narrowest that holds the vocabulary (uint8 for bytes, uint16,
            uint32).
    """
    return _run(SimpleNamespace(**locals()))  # the options as one object, for the steps below


def human_bytes(n: int | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, as throughput in MB/s)."""
    if n is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def run(args: Namespace) -> int:
    return call(prepare_corpus, args)


def _run(args: SimpleNamespace) -> int:
    from multitoken.data.prepare import PrepareOptions, prepare
    from multitoken.data.tokenizer import build_tokenizer

    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    options = PrepareOptions(val_fraction=args.val_fraction, workers=workers, jsonl_field=args.jsonl_field,
                             parquet_column=args.parquet_column, shard_tokens=args.shard_tokens, dtype=args.dtype)
    tokenizer = build_tokenizer(args.tokenizer)
    try:
        result = prepare(args.data, tokenizer, args.out, options)
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to finish", file=sys.stderr)
        return 130
    m = result.manifest
    tokens = {s: m["splits"][s]["tokens"] for s in ("train", "val")}
    if result.up_to_date:
        print(f"{args.out} is up to date ({result.units} units, {sum(tokens.values()):,} tokens): nothing to do")
        return 0
    size = sum(s["size"] for s in m["sources"])
    rate = result.bytes_processed / 1e6 / max(result.seconds, 1e-9)
    n_workers = min(workers, result.units - result.units_reused) or 1
    print(f"prepared {human_bytes(size)} from {len(m['sources']):,} files in {result.seconds:.1f} s "
          f"({rate:.1f} MB/s, {n_workers} worker{'s' if n_workers > 1 else ''})"
          + (f", {result.units_reused} of {result.units} units already done" if result.units_reused else ""))
    for split in ("train", "val"):
        s = m["splits"][split]
        print(f"  {split:<5} {s['tokens']:>15,} tokens  {s['documents']:>11,} documents  {len(s['shards']):>5} shards")
    tok = m["tokenizer"]
    print(f"tokenizer {tok['kind']} (vocab {tok['vocab_size']:,}, end-of-text id {tok['eot_id']}), {m['dtype']} "
          f"-> {args.out}")
    print(f"peak memory (RSS): main process {human_bytes(result.peak_rss.get('main'))}, largest worker "
          f"{human_bytes(result.peak_rss.get('workers'))}")
    if not tokens["val"] or not tokens["train"]:
        print(f"warning: the {'validation' if not tokens['val'] else 'training'} split is empty: use more documents "
              "or another --val-fraction")
    return 0
