"""One unit of `prepare` work: tokenize a run of source pieces into shard files, then record that it is done.

A unit writes, for each split, `SPLIT/shard_UUUUUU_PPP.bin` (unit U, part P: a new part starts every shard_tokens
tokens), each under a temporary name renamed into place once complete, and last `.units/unit_UUUUUU.json`, its
record. A unit whose record exists, matches the plan, and whose shards are all there at their recorded sizes is done:
that is what makes an interrupted run resumable and a finished one a no-op.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multitoken.data.corpus import is_validation
from multitoken.data.documents import Piece, read_segments
from multitoken.data.tokenizer import Tokenizer
from multitoken.files import atomic_write_text

SPLITS = ("train", "val")
UNITS_DIR = ".units"
_BATCH_BYTES = 1 << 18  # text per tokenizer call: a few segments for its threads; its working memory is ~100x this


@dataclass(frozen=True)
class UnitSettings:
    """Everything besides the input that decides a unit's output (and so belongs in its key)."""

    dtype: str
    eot_id: int
    val_fraction: float
    jsonl_field: str
    parquet_column: str
    shard_tokens: int


@dataclass(frozen=True)
class Unit:
    index: int
    pieces: tuple[Piece, ...]
    key: str  # hash of the pieces (paths, sizes, mtimes, ranges), the settings and the tokenizer

    @property
    def weight(self) -> int:
        return sum(p.weight for p in self.pieces)


def unit_record_path(out: Path, index: int) -> Path:
    return out / UNITS_DIR / f"unit_{index:06d}.json"


def shards_intact(out: Path, shards: list[dict], itemsize: int) -> bool:
    """Every listed shard is there with exactly its recorded number of tokens. A shard entry may name a range of its
    file ("start", "tokens") when the two splits share a file (see prepare.hold_out_tail); "file_tokens" is then the
    whole file's."""
    for shard in shards:
        try:
            if (out / shard["file"]).stat().st_size != shard.get("file_tokens", shard["tokens"]) * itemsize:
                return False
        except OSError:
            return False
    return True


class _PartWriter:
    """A unit's token stream for one split, cut into files of at most shard_tokens tokens."""

    def __init__(self, out: Path, split: str, unit: int, dtype: np.dtype, shard_tokens: int):
        self.out, self.split, self.unit, self.dtype, self.shard_tokens = out, split, unit, dtype, shard_tokens
        self.shards: list[dict] = []
        self._file = None
        self._tmp: Path | None = None
        self._count = 0

    def _name(self) -> str:
        return f"{self.split}/shard_{self.unit:06d}_{len(self.shards):03d}.bin"

    def write(self, ids: np.ndarray) -> None:
        while ids.size:
            if self._file is None:
                self._tmp = self.out / f"{self._name()}.tmp-{os.getpid()}"
                self._file, self._count = self._tmp.open("wb", buffering=1 << 20), 0
            take = ids[:self.shard_tokens - self._count]
            self._file.write(take.tobytes())
            self._count += take.size
            ids = ids[take.size:]
            if self._count == self.shard_tokens:
                self._finish()

    def _finish(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())  # the data is on disk before the name says the shard is complete
            self._file.close()
            name = self._name()
            os.replace(self._tmp, self.out / name)
            self.shards.append({"file": name, "tokens": self._count})
            self._file = self._tmp = None

    def close(self) -> list[dict]:
        self._finish()
        return self.shards

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._file = self._tmp = None


@dataclass
class _Stats:
    documents: int = 0
    tokens: int = 0

    def add(self, documents: int, tokens: int) -> None:
        self.documents += documents
        self.tokens += tokens


@dataclass
class _Batch:
    texts: list = field(default_factory=list)
    splits: list = field(default_factory=list)
    ends: list = field(default_factory=list)  # whether an end-of-text token follows
    sources: list = field(default_factory=list)
    nbytes: int = 0
    size: int = 0


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory (Linux VmHWM), or None where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_unit(unit: Unit, out: Path, tokenizer: Tokenizer, settings: UnitSettings,
             report: Callable[[int], None] = lambda n: None) -> dict:
    """Tokenize the unit into its shards and write its record; returns the record. report(n) is called as input
    bytes are consumed (progress)."""
    dtype = np.dtype(settings.dtype)
    eot = np.array([settings.eot_id], dtype=dtype)
    writers = {s: _PartWriter(out, s, unit.index, dtype, settings.shard_tokens) for s in SPLITS}
    split_stats = {s: _Stats() for s in SPLITS}
    source_stats: dict[str, _Stats] = {}
    last_key, last_split = None, None

    def flush(batch: _Batch) -> None:
        ids = tokenizer.encode_batch(batch.texts) if batch.texts else []
        chunks: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        for piece_ids, split, end, source in zip(ids, batch.splits, batch.ends, batch.sources):
            chunks[split].append(piece_ids.astype(dtype, copy=False))
            if end:
                chunks[split].append(eot)
            split_stats[split].add(int(end), piece_ids.size + end)
            source_stats.setdefault(source, _Stats()).add(int(end), piece_ids.size + end)
        for split, parts in chunks.items():
            if parts:
                writers[split].write(np.concatenate(parts))
        report(batch.nbytes)

    try:
        batch = _Batch()
        for piece in unit.pieces:
            seen, name = 0, str(piece.source.path.absolute())  # the manifest names sources by absolute path
            for segment in read_segments(piece, settings.jsonl_field, settings.parquet_column):
                if segment.doc_key != last_key:  # a text file's segments share one key: hash it once
                    last_key, last_split = segment.doc_key, ("val" if is_validation(segment.doc_key,
                                                                                    settings.val_fraction) else "train")
                batch.texts.append(segment.text)
                batch.splits.append(last_split)
                batch.ends.append(segment.end_of_doc)
                batch.sources.append(name)
                batch.nbytes += segment.nbytes
                batch.size += len(segment.text)
                seen += segment.nbytes
                if batch.size >= _BATCH_BYTES:
                    flush(batch)
                    batch = _Batch()
            report(piece.weight - seen)  # bytes of skipped (empty) documents, so progress adds up
        flush(batch)
        record = {"unit": unit.index, "key": unit.key,
                  "splits": {s: {"documents": split_stats[s].documents, "tokens": split_stats[s].tokens,
                                 "shards": writers[s].close()} for s in SPLITS},
                  "sources": {path: vars(stats) for path, stats in source_stats.items()}}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    atomic_write_text(unit_record_path(out, unit.index), json.dumps(record) + "\n")
    return record
