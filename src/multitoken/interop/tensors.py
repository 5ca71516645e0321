"""Tensors read one at a time: lazy handles on safetensors and torch checkpoint files, and a streaming safetensors
writer.

A 7B model is ~25 GB in fp32; converting it must not need that much memory. Readers here therefore hand out
`LazyTensor`s (shape and dtype known up front from the file's header, data read only on `load()`), and
`write_safetensors` writes the header from those shapes first, then each tensor's bytes as it is loaded, so at most
one tensor (plus its converted copy) is in memory at a time.

Why a writer of our own: `safetensors.torch.save_file` needs every tensor in memory at once (its header depends on
all of them), and the library has no incremental API. The format is small and fixed (8-byte little-endian header
length, a JSON header of dtype, shape and byte offsets, then the raw bytes in offset order); every file written here
is read back by safetensors itself in the tests.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from multitoken.errors import CheckpointError

# safetensors' dtype names (the format's spec).
DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
               torch.bool: "BOOL"}
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


@dataclass(frozen=True)
class LazyTensor:
    """A tensor's shape and dtype, and how to read it."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    load: Callable[[], torch.Tensor]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> LazyTensor:
        """The same tensor passed through fn (shape-preserving, e.g. a row permutation) when loaded."""
        return LazyTensor(self.shape, self.dtype, lambda: fn(self.load()))


def safetensors_tensors(path: Path) -> dict[str, LazyTensor]:
    """Every tensor in one .safetensors file, unread. The header is parsed here and each tensor is read with a plain
    positioned read when loaded, rather than through a memory map: a map's pages count in the process's resident
    memory until it is closed, which would make a converter's footprint look like the whole file."""
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if not 0 < header_len <= 100_000_000:
                raise ValueError(f"header length {header_len}")
            header = json.loads(f.read(header_len))
        size = os.path.getsize(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:100] if str(e) else ''}): download it again") from None
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (8 + header_len + int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name} has dtype {info.get('dtype') if isinstance(info, dict) else '?'}"
                                  " or a header entry multitoken does not read: convert the file to float32, bfloat16 "
                                  "or float16 first") from None
        if end > size or end - begin != dtype.itemsize * math.prod(shape):
            raise CheckpointError(f"{path}: tensor {name} lies beyond the end of the file or has the wrong size: the "
                                  "file is truncated or damaged, download it again")
        out[name] = LazyTensor(shape, dtype, _reader(path, begin, end, dtype, shape))
    return out


def _reader(path: Path, begin: int, end: int, dtype: torch.dtype, shape: tuple[int, ...]) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        buffer = bytearray(end - begin)
        with open(path, "rb") as f:
            f.seek(begin)
            if f.readinto(buffer) != len(buffer):
                raise CheckpointError(f"{path} ended early: the file is truncated, download it again")
        if not buffer:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape)
    return load


def torch_checkpoint_tensors(path: Path) -> dict[str, LazyTensor]:
    """Every tensor of a torch.save'd state dict, memory-mapped (zip format) so that nothing is read until used.

    Loaded with weights_only=True: a pickle that would build anything but tensors and plain containers is refused
    before it can run, so a hostile consolidated.pth cannot execute code.
    """
    try:
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # the legacy (non-zip) format cannot be memory-mapped: read it whole
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = next((line for line in str(e).splitlines() if line.strip()), "")
        raise CheckpointError(f"{path} holds a pickle that is not plain tensors and was not run ({first[:120]}): "
                              "only load checkpoints from sources you trust, as safetensors where possible") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:100] if str(e) else ''}): download it again") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors: expected Meta's consolidated.pth layout")
    return {name: LazyTensor(tuple(t.shape), t.dtype, lambda t=t: t) for name, t in state.items()}


def write_safetensors(path: Path, tensors: Mapping[str, LazyTensor], dtype: torch.dtype | None = None,
                      metadata: dict[str, str] | None = None, progress: str | None = None) -> int:
    """Write tensors (loaded one at a time, floating ones cast to dtype when given) as one safetensors file.
    progress: a label for a progress bar over the bytes (None: no bar). Returns the bytes written."""
    from tqdm.auto import tqdm

    def out_dtype(t: LazyTensor) -> torch.dtype:
        return dtype if dtype is not None and t.dtype.is_floating_point else t.dtype

    names = sorted(tensors)
    header: dict[str, object] = {"__metadata__": dict(metadata or {})} if metadata else {}
    offset = 0
    for name in names:
        t = tensors[name]
        size = out_dtype(t).itemsize
        for n in t.shape:
            size *= n
        header[name] = {"dtype": DTYPE_NAMES[out_dtype(t)], "shape": list(t.shape), "data_offsets": [offset,
                                                                                                     offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f, tqdm(total=offset, unit="B", unit_scale=True, desc=progress, leave=False,
                                     disable=progress is None) as bar:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for name in names:
            lazy = tensors[name]
            tensor = lazy.load()
            if tuple(tensor.shape) != lazy.shape:
                raise CheckpointError(f"tensor {name} read as shape {tuple(tensor.shape)}, its header said "
                                      f"{lazy.shape}: the source file is damaged")
            data = tensor.detach().to(device="cpu", dtype=out_dtype(lazy)).contiguous()
            if data.is_floating_point() and not bool(torch.isfinite(data).all()):
                where = "in the source" if not torch.isfinite(tensor).all() else f"once cast to {out_dtype(lazy)}"
                raise CheckpointError(f"tensor {name} holds NaN or infinity {where}: the weights are damaged (or "
                                      "their run diverged)" + ("" if where == "in the source" else
                                                               ": keep a wider dtype (--dtype float32 or bfloat16)"))
            f.write(data.reshape(-1).view(torch.uint8).numpy().data)
            bar.update(data.numel() * data.element_size())
            del tensor, data
        f.flush()
        os.fsync(f.fileno())
    return 8 + len(encoded) + offset
