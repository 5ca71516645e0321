"""`prepare`: tokenize a corpus of any size once, into flat shard files that training memory-maps.

    OUT/manifest.json                   what was prepared from what (written last: its presence means complete)
    OUT/tokenizer/                      the tokenizer (tokenizer_config.json, and tokenizer.json for BPE)
    OUT/train/shard_000000_000.bin      token ids (uint8, uint16 or uint32), an end-of-text id after every document
    OUT/val/shard_000000_000.bin        ...
    OUT/.units/unit_000000.json         per-unit records, for resuming

The input is cut into units of about `unit_bytes` (16 MiB: small files packed together, large files cut into pieces;
see documents.py for where cuts may fall). Units are planned from the input alone, so their shards, and the order
they are read in, are the same for any number of workers. Each document goes to validation when a hash of its name
(the file's relative path; for JSONL `path@byte-offset`, for Parquet `path#row`) falls below val_fraction, the rule of
corpus.is_validation; where that leaves a split empty (one file, a handful of documents), the tail of the token stream
is held out instead, so neither split is ever empty. Workers are processes; each tokenizes whole units, streaming,
and writes its own shards.

This is the only writer of token data: `train --data FOLDER` prepares into a cache folder through it too.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multitoken.data.documents import Source, check_sources, find_document_sources, split_source
from multitoken.data.prepare_unit import (SPLITS, UNITS_DIR, Unit, UnitSettings, peak_rss_bytes, run_unit,
                                          shards_intact, unit_record_path)
from multitoken.data.tokenizer import Tokenizer, load_tokenizer
from multitoken.errors import CheckpointError, ConfigError, DataError
from multitoken.files import atomic_write_text, build_aside, read_json_or

VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
UNIT_BYTES = 16 << 20  # input per unit of work: the grain of parallelism and of resuming


@dataclass(frozen=True)
class PrepareOptions:
    val_fraction: float = 0.02
    workers: int = 1
    jsonl_field: str = "text"
    parquet_column: str = "text"
    shard_tokens: int = 1 << 27
    dtype: str = "auto"
    unit_bytes: int = UNIT_BYTES
    progress: bool | None = None  # None: a progress bar when stderr is a terminal

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be between 0 and 1 (got {self.val_fraction})")
        for name in ("workers", "shard_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.unit_bytes < 1024:
            raise ConfigError(f"unit_bytes must be at least 1024 (got {self.unit_bytes})")


@dataclass
class PrepareResult:
    manifest: dict
    up_to_date: bool = False
    units: int = 0
    units_reused: int = 0
    bytes_processed: int = 0  # input bytes tokenized by this run
    seconds: float = 0.0
    peak_rss: dict = field(default_factory=dict)  # "main" and "workers" (largest), bytes


def resolve_dtype(choice: str, vocab_size: int) -> str:
    """The narrowest of uint8 (byte-level data), uint16 and uint32 that holds every token id; a forced one must fit."""
    limits = {"uint8": 2**8, "uint16": 2**16, "uint32": 2**32}
    narrowest = next(name for name, limit in limits.items() if vocab_size <= limit)
    if choice == "auto":
        return narrowest
    if choice not in limits:
        raise ConfigError(f"--dtype must be auto, uint8, uint16 or uint32 (got {choice!r})")
    if vocab_size > limits[choice]:
        raise ConfigError(f"--dtype {choice} cannot hold token ids up to {vocab_size - 1} (vocabulary {vocab_size}): "
                          f"use --dtype {narrowest} or auto")
    return choice


def _check_out_dir(out: Path, tokenizer: Tokenizer) -> None:
    """OUT is new, empty, or an earlier prepare with the same tokenizer; never someone else's folder."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file: choose a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not any((out / name).exists() for name in (MANIFEST, TOKENIZER_DIR, UNITS_DIR)):
        raise DataError(f"--out {out} is not empty and holds no prepared data: choose a new or empty folder")
    if (out / TOKENIZER_DIR).is_dir():
        try:
            previous = load_tokenizer(out / TOKENIZER_DIR)
        except (CheckpointError, ConfigError):
            raise DataError(f"{out / TOKENIZER_DIR} is damaged: delete {out} and prepare again") from None
        if previous.fingerprint != tokenizer.fingerprint:
            raise DataError(f"{out} holds data prepared with a different tokenizer ({previous.kind}, fingerprint "
                            f"{previous.fingerprint[:12]}): choose another --out, or delete {out} to start over")


def _save_tokenizer(out: Path, tokenizer: Tokenizer) -> None:
    if (out / TOKENIZER_DIR).is_dir():
        return
    with build_aside(out / TOKENIZER_DIR) as tmp:
        tokenizer.save(tmp)


def plan_units(sources: list[Source], unit_bytes: int, settings: UnitSettings, fingerprint: str) -> list[Unit]:
    """Pack the sources' pieces, in order, into units of at most unit_bytes (a larger piece is a unit of its own)."""
    groups, current, weight = [], [], 0
    for source in sources:
        for piece in split_source(source, unit_bytes):
            if current and weight + piece.weight > unit_bytes:
                groups.append(current)
                current, weight = [], 0
            current.append(piece)
            weight += piece.weight
    if current:
        groups.append(current)
    common = json.dumps({"version": VERSION, "tokenizer": fingerprint, **vars(settings)}, sort_keys=True)
    units = []
    for index, pieces in enumerate(groups):
        h = hashlib.sha256(common.encode())
        for p in pieces:
            s = p.source
            h.update(f"\n{s.path.resolve()}\0{s.key}\0{s.kind}\0{s.size}\0{s.mtime_ns}\0{p.start}\0{p.end}".encode(
                "utf-8", "surrogateescape"))  # file names need not be valid UTF-8
        units.append(Unit(index, tuple(pieces), h.hexdigest()))
    return units


def _done_record(out: Path, unit: Unit, itemsize: int) -> dict | None:
    record = read_json_or(unit_record_path(out, unit.index))
    if record is None or record.get("key") != unit.key:
        return None
    if not all(shards_intact(out, record["splits"][s]["shards"], itemsize) for s in SPLITS):
        return None
    return record


def _remove_leftovers(out: Path, keep: set[str], n_units: int) -> None:
    """Temporary files of interrupted runs, shards and records of units no longer in the plan."""
    for split in SPLITS:
        for path in (out / split).glob("shard_*"):
            if f"{split}/{path.name}" not in keep:
                path.unlink(missing_ok=True)
    for path in (out / UNITS_DIR).glob("unit_*"):
        if path.name.endswith(".json") and path.name[5:-5].isdigit() and int(path.name[5:-5]) < n_units:
            continue
        path.unlink(missing_ok=True)
    for path in out.glob(f".{TOKENIZER_DIR}.tmp-*"):
        shutil.rmtree(path, ignore_errors=True)


# --- workers --------------------------------------------------------------------------------------------------------

_worker: dict = {}


def _init_worker(tokenizer_dir: str, counter, threads: int) -> None:
    # The BPE tokenizer's Rust thread pool would start one thread per core in every worker; share the cores instead.
    # (Read when the pool starts, at the first encode: the parent never encodes before forking.)
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    _worker.update(tokenizer=load_tokenizer(Path(tokenizer_dir)), counter=counter)


def _report_shared(n: int) -> None:
    with _worker["counter"].get_lock():
        _worker["counter"].value += n


def _work(unit: Unit, out: Path, settings: UnitSettings) -> tuple[dict, int | None]:
    record = run_unit(unit, out, _worker["tokenizer"], settings, _report_shared)
    return record, peak_rss_bytes()


def _context():
    # fork on Linux: workers start at once and share the parent's imported modules (torch is ~200 MB) instead of
    # importing everything again. The CLI's parent never tokenizes before forking; a library caller that did gets
    # children whose tokenizer threads `tokenizers` itself turns off (its guard against forking after using them).
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _run_units(pending: list[Unit], out: Path, tokenizer: Tokenizer, settings: UnitSettings, workers: int,
               progress: bool | None) -> tuple[list[dict], int | None]:
    from tqdm.auto import tqdm

    if not pending:  # every unit already done (a run stopped just before its manifest): only the manifest is left
        return [], None
    total = sum(u.weight for u in pending)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="prepare", leave=False, smoothing=0.1,
               disable=None if progress is None else not progress)  # None: only on a terminal
    records, worker_peak = [], None
    try:
        if workers == 1 or len(pending) == 1:
            for unit in pending:
                records.append(run_unit(unit, out, tokenizer, settings, bar.update))
            return records, worker_peak
        ctx = _context()
        counter = ctx.Value("q", 0)
        workers = min(workers, len(pending))
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(str(out / TOKENIZER_DIR), counter, threads)) as pool:
            waiting = [pool.apply_async(_work, (unit, out, settings)) for unit in pending]
            while waiting:
                waiting[0].wait(0.25)
                bar.update(counter.value - bar.n)
                for result in [r for r in waiting if r.ready()]:
                    record, peak = result.get()  # re-raises a worker's error here; the pool is then terminated
                    records.append(record)
                    worker_peak = max(worker_peak or 0, peak or 0) or None
                    waiting.remove(result)
        return records, worker_peak
    finally:
        bar.close()


# --- the whole run --------------------------------------------------------------------------------------------------

def _manifest(out: Path, plan_key: str, sources: list[Source], units: list[Unit], records: dict[int, dict],
              tokenizer: Tokenizer, settings: UnitSettings, options: PrepareOptions) -> dict:
    per_source: dict[str, list[int]] = {}
    splits = {s: {"documents": 0, "tokens": 0, "shards": []} for s in SPLITS}
    for unit in units:
        record = records[unit.index]
        for path, stats in record["sources"].items():
            acc = per_source.setdefault(path, [0, 0])
            acc[0] += stats["documents"]
            acc[1] += stats["tokens"]
        for s in SPLITS:
            for key in ("documents", "tokens"):
                splits[s][key] += record["splits"][s][key]
            splits[s]["shards"] += record["splits"][s]["shards"]
    hold_out_tail(splits, settings.val_fraction)
    return {
        "format": "multitoken-prepared", "version": VERSION, "plan": plan_key,
        "tokenizer": {"kind": tokenizer.kind, "fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size,
                      "eot_id": tokenizer.eot_id, "dir": TOKENIZER_DIR},
        "dtype": settings.dtype, "eot_id": settings.eot_id, "val_fraction": settings.val_fraction,
        "jsonl_field": settings.jsonl_field, "parquet_column": settings.parquet_column,
        "shard_tokens": settings.shard_tokens, "unit_bytes": options.unit_bytes,
        "sources": [{"path": str(s.path.absolute()), "key": s.key, "kind": s.kind, "size": s.size,
                     "mtime_ns": s.mtime_ns, "documents": per_source.get(str(s.path.absolute()), [0, 0])[0],
                     "tokens": per_source.get(str(s.path.absolute()), [0, 0])[1]} for s in sources],
        "splits": splits,
    }


def _cut_shards(shards: list[dict], cut: int) -> tuple[list[dict], list[dict]]:
    """A split's shards as the first `cut` tokens and the rest; a shard straddling the cut is shared, each side
    naming its own range of the file."""
    head, tail, pos = [], [], 0
    for shard in shards:
        n = shard["tokens"]
        if pos + n <= cut:
            head.append(shard)
        elif pos >= cut:
            tail.append(shard)
        else:
            k, start, whole = cut - pos, shard.get("start", 0), shard.get("file_tokens", n)
            head.append({**shard, "tokens": k, "file_tokens": whole})
            tail.append({**shard, "start": start + k, "tokens": n - k, "file_tokens": whole})
        pos += n
    return head, tail


def hold_out_tail(splits: dict, val_fraction: float) -> None:
    """The split rule's guarantee: where hashing names left one split empty, cut the other's token stream, the last
    val_fraction of it (at least one token) to validation. In place; a no-op when both splits hold tokens."""
    train, val = splits["train"], splits["val"]
    total = train["tokens"] + val["tokens"]
    if (train["tokens"] and val["tokens"]) or total < 2:
        return
    side = train if train["tokens"] else val
    cut = min(max(int(total * (1 - val_fraction)), 1), total - 1)
    head, tail = _cut_shards(side["shards"], cut)
    splits["train"] = {"documents": side["documents"], "tokens": cut, "shards": head}
    splits["val"] = {"documents": 0, "tokens": total - cut, "shards": tail, "held_out_tail": True}


def read_manifest(out: Path) -> dict | None:
    return read_json_or(Path(out) / MANIFEST)


def prepare(paths: list[str], tokenizer: Tokenizer, out: str | Path, options: PrepareOptions = PrepareOptions()
            ) -> PrepareResult:
    """Tokenize the files and folders in `paths` into OUT. Finished units are kept; a finished OUT is left as it is."""
    return prepare_sources(find_document_sources(paths), tokenizer, out, options)


def prepare_sources(sources: list[Source], tokenizer: Tokenizer, out: str | Path,
                    options: PrepareOptions = PrepareOptions()) -> PrepareResult:
    """`prepare` for sources already found (the built-in corpus names its own)."""
    start = time.perf_counter()
    out = Path(out).expanduser()
    dtype = resolve_dtype(options.dtype, tokenizer.vocab_size)
    # Never read our own output (--out inside a --data folder): its manifest and tokenizer.json are text files.
    sources = [s for s in sources if not s.path.resolve().is_relative_to(out.resolve())]
    if not sources:
        raise DataError(f"no input files outside --out {out}: point --data at your data")
    check_sources(sources, options.parquet_column)
    _check_out_dir(out, tokenizer)
    settings = UnitSettings(dtype=dtype, eot_id=int(tokenizer.eot_id), val_fraction=options.val_fraction,
                            jsonl_field=options.jsonl_field, parquet_column=options.parquet_column,
                            shard_tokens=options.shard_tokens)
    units = plan_units(sources, options.unit_bytes, settings, tokenizer.fingerprint)
    plan_key = hashlib.sha256("".join(u.key for u in units).encode()).hexdigest()
    itemsize = np.dtype(dtype).itemsize

    manifest = read_manifest(out)
    if manifest and manifest.get("plan") == plan_key and all(
            shards_intact(out, manifest["splits"][s]["shards"], itemsize) for s in SPLITS):
        return PrepareResult(manifest, up_to_date=True, units=len(units), units_reused=len(units),
                             seconds=time.perf_counter() - start)

    for directory in (out, out / UNITS_DIR, *(out / s for s in SPLITS)):
        directory.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here until the end, OUT is not a complete prepare
    _save_tokenizer(out, tokenizer)
    records = {u.index: r for u in units if (r := _done_record(out, u, itemsize)) is not None}
    pending = [u for u in units if u.index not in records]
    for unit in pending:
        unit_record_path(out, unit.index).unlink(missing_ok=True)
    new_records, worker_peak = _run_units(pending, out, tokenizer, settings, options.workers, options.progress)
    records.update((r["unit"], r) for r in new_records)

    manifest = _manifest(out, plan_key, sources, units, records, tokenizer, settings, options)
    keep = {shard["file"] for s in SPLITS for shard in manifest["splits"][s]["shards"]}
    _remove_leftovers(out, keep, len(units))
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return PrepareResult(manifest, units=len(units), units_reused=len(units) - len(pending),
                         bytes_processed=sum(u.weight for u in pending), seconds=time.perf_counter() - start,
                         peak_rss={"main": peak_rss_bytes(), "workers": worker_peak})
