"""Writing a small file so that a kill at any moment leaves either the old contents or the new, never half of them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from multitoken.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; callers go unguarded there
    fcntl = None


def make_folder(path: Path, what: str) -> Path:
    """mkdir -p, with a one-line error naming the setting (what) when the path, or a folder above it, is a file."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise ConfigError(f"{what} {blocker} is a file, not a folder: choose another path or move the file") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} cannot be created (permission denied): choose a folder you can write")\
            from None
    return path


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
