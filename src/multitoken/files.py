"""Writing a small file so that a kill at any moment leaves either the old contents or the new, never half of them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; callers go unguarded there
    fcntl = None


def atomic_write_text(path: Path, text: str) -> None:
    """Write text beside path, flush it to disk, then rename it over path (a rename within a folder is atomic)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on path (created if need be), waiting for it: processes that would write the
    same files take turns. The kernel drops it when its holder dies, so a killed holder never blocks the next."""
    with open(path, "a") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield  # closing the file drops the lock
