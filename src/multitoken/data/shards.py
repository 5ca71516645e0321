"""Reading prepared data: a split's shard files seen as one flat token array, and `open_prepared` for a whole folder.

`ShardedTokens` supports what the batch samplers use (`len`, `dtype`, and `x[a:b]` slices that may cross shard
boundaries, returned as numpy arrays), so `train_batch` and `eval_batches` run on prepared data unchanged. Shards are
memory-mapped on first use, and only the most recently used ones stay open: a corpus of thousands of shards never
holds thousands of file handles.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multitoken.data.prepare import MANIFEST, TOKENIZER_DIR, UNITS_DIR, read_manifest
from multitoken.data.tokenizer import Tokenizer, load_tokenizer
from multitoken.errors import CheckpointError, ConfigError, DataError

_OPEN_SHARDS = 64


@dataclass
class TokenData:
    """Both splits of a prepared folder, each a flat token sequence with an end-of-text id after every document."""

    train: ShardedTokens
    val: ShardedTokens
    meta: dict


class ShardedTokens:
    """Read-only concatenation of shard files of one dtype; `lengths` are their token counts, `starts` (default 0)
    where in its file each shard's tokens begin."""

    def __init__(self, paths: list[Path], lengths: list[int], dtype: np.dtype | str, vocab_size: int | None = None,
                 starts: list[int] | None = None):
        self.paths = [Path(p) for p in paths]
        self.dtype = np.dtype(dtype)
        self.starts = list(starts) if starts is not None else [0] * len(self.paths)
        self.vocab_size = vocab_size  # when given, each shard is checked to hold only ids below it when first opened
        self._checked: set[int] = set()
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)
        self._open: OrderedDict[int, np.memmap] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:  # pickled (e.g. into a worker process) without its open memory maps
        return {**self.__dict__, "_open": OrderedDict()}

    def _shard(self, i: int) -> np.memmap:
        if i in self._open:
            self._open.move_to_end(i)
        else:
            if len(self._open) >= _OPEN_SHARDS:
                self._open.popitem(last=False)
            shard = np.memmap(self.paths[i], dtype=self.dtype, mode="r", offset=self.starts[i] * self.dtype.itemsize,
                              shape=(int(self.offsets[i + 1] - self.offsets[i]),))
            if self.vocab_size is not None and i not in self._checked:
                check_token_ids(shard, self.vocab_size, self.paths[i])
                self._checked.add(i)
            self._open[i] = shard
        return self._open[i]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("ShardedTokens supports contiguous slices only (step 1)")
            return self._read(start, max(stop, start))
        if isinstance(index, (int, np.integer)):
            i = int(index) + len(self) if index < 0 else int(index)
            if not 0 <= i < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} tokens")
            return self._read(i, i + 1)[0]
        raise TypeError(f"ShardedTokens indices must be integers or slices, not {type(index).__name__}")

    def _read(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        parts = []
        i = first
        while start < stop:
            lo = start - int(self.offsets[i])
            take = min(stop, int(self.offsets[i + 1])) - start
            parts.append(self._shard(i)[lo:lo + take])
            start += take
            i += 1
        if not parts:
            return np.zeros(0, dtype=self.dtype)
        return np.array(parts[0]) if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[0:len(self)]
        return whole if dtype is None else whole.astype(dtype)

    def __repr__(self) -> str:
        return f"ShardedTokens({len(self):,} tokens in {len(self.paths)} shards, {self.dtype.name})"


def check_token_ids(tokens: np.ndarray, vocab_size: int, path: Path) -> None:
    """Token data must hold only ids the tokenizer has: an id beyond it would index past the embedding table."""
    if len(tokens) and int(tokens.max()) >= vocab_size:
        raise DataError(f"{path} holds token id {int(tokens.max())}, but its tokenizer has {vocab_size} tokens: the "
                        "data is damaged or was made with another tokenizer; prepare it again")


def _shard_path(directory: Path, name: object) -> Path:
    """A shard named by a manifest, which must lie inside the prepared folder: a downloaded folder's manifest must not
    make train or eval read other files (`../x`, absolute paths, links out of the folder)."""
    path = directory / str(name)
    if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts or \
            not path.resolve().is_relative_to(directory.resolve()):
        raise DataError(f"{directory / MANIFEST} names shard {name!r}, outside {directory}: the folder is damaged or "
                        "not from `multitoken prepare`; prepare the data again")
    return path


def _split(directory: Path, manifest: dict, split: str, vocab_size: int) -> ShardedTokens:
    shards = manifest["splits"][split]["shards"]
    dtype = np.dtype(manifest["dtype"])
    paths, lengths = [_shard_path(directory, s["file"]) for s in shards], [int(s["tokens"]) for s in shards]
    starts = [int(s.get("start", 0)) for s in shards]
    for path, shard, start, tokens in zip(paths, shards, starts, lengths):
        whole = int(shard.get("file_tokens", tokens))
        if not path.is_file() or path.stat().st_size != whole * dtype.itemsize or not 0 <= start <= whole - tokens:
            raise DataError(f"shard {path} is missing or truncated: rerun the same `multitoken prepare` command to "
                            "repair it")
    return ShardedTokens(paths, lengths, dtype, vocab_size, starts)


def is_prepared(directory: str | Path) -> bool:
    """A folder `multitoken prepare` wrote into, finished or not (an unfinished one must not be read as text)."""
    directory = Path(directory)
    return (directory / MANIFEST).is_file() or (directory / UNITS_DIR).is_dir() or \
        ((directory / TOKENIZER_DIR).is_dir() and any((directory / split).is_dir() for split in ("train", "val")))


def open_prepared(directory: str | Path) -> tuple[Tokenizer, TokenData]:
    """The tokenizer and both splits of a folder written by `multitoken prepare`."""
    directory = Path(directory).expanduser()
    manifest = read_manifest(directory)
    if manifest is None:
        raise DataError(f"{directory / MANIFEST} is missing or damaged: the prepare did not finish; rerun the same "
                        "`multitoken prepare` command to complete it")
    try:
        tokenizer = load_tokenizer(directory / TOKENIZER_DIR)
    except (CheckpointError, ConfigError):
        raise DataError(f"{directory / TOKENIZER_DIR} is missing or damaged: prepare the data again") from None
    try:
        if tokenizer.fingerprint != manifest["tokenizer"]["fingerprint"]:
            raise DataError(f"{directory / TOKENIZER_DIR} is not the tokenizer {directory} was prepared with: "
                            "prepare the data again")
        train = _split(directory, manifest, "train", tokenizer.vocab_size)
        val = _split(directory, manifest, "val", tokenizer.vocab_size)
    except (KeyError, TypeError):
        raise DataError(f"{directory / MANIFEST} is damaged: prepare the data again") from None
    meta = {"prepared": True, "directory": str(directory), "tokenizer": tokenizer.kind, "dtype": manifest["dtype"],
            "eot_id": manifest["eot_id"], "tokens": {"train": len(train), "val": len(val)}, "manifest": manifest}
    return tokenizer, TokenData(train=train, val=val, meta=meta)


def join_prepared(directories: list[str | Path]) -> tuple[Tokenizer, TokenData]:
    """Several prepared folders read as one: each split the concatenation of the folders' splits, in the order given.
    They must share a tokenizer (the same ids mean the same tokens) and a token dtype."""
    opened = [(Path(d).expanduser(), *open_prepared(d)) for d in directories]
    first_dir, tokenizer, first = opened[0]
    for directory, other, data in opened[1:]:
        if other.fingerprint != tokenizer.fingerprint:
            raise ConfigError(f"{directory} was prepared with another tokenizer ({other.kind}, vocab {other.vocab_size}) "
                              f"than {first_dir} ({tokenizer.kind}, vocab {tokenizer.vocab_size}): folders trained on "
                              "together must share one; prepare them with the same --tokenizer")
        if data.train.dtype != first.train.dtype:
            raise ConfigError(f"{directory} holds {data.train.dtype} tokens and {first_dir} {first.train.dtype}: "
                              f"prepare them with the same --dtype to train on them together")
    if len(opened) == 1:
        return tokenizer, first

    def joined(split: str) -> ShardedTokens:
        parts = [getattr(data, split) for _, _, data in opened]
        return ShardedTokens([p for part in parts for p in part.paths],
                             [int(n) for part in parts for n in np.diff(part.offsets)], first.train.dtype,
                             tokenizer.vocab_size, [s for part in parts for s in part.starts])

    train, val = joined("train"), joined("val")
    meta = {**first.meta, "directory": [str(d) for d, _, _ in opened],
            "tokens": {"train": len(train), "val": len(val)}, "manifest": [data.meta["manifest"] for *_, data in opened]}
    return tokenizer, TokenData(train=train, val=val, meta=meta)
