"""Shared file I/O, named once: small files and whole folders written so that a kill at any moment leaves the old
contents or the new, never half of them; JSON read back with one line naming a damaged file; folders made with one
line naming a file in the way; an advisory lock."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from multitoken.errors import CheckpointError, ConfigError, MultitokenError

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


def fsync_folder(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def build_aside(final: Path, replace: bool = False) -> Iterator[Path]:
    """Yields a hidden temporary folder beside `final` (`.NAME.tmp-*`) to fill; on success every file in it is
    fsynced and it is renamed to `final` in one step, so a failure or a kill leaves nothing at `final` (or, with
    replace, the old folder: it is moved aside as `.NAME.old-PID`, the new one renamed in, then the old one
    deleted). On failure the temporary folder is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        if replace and final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        fsync_folder(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_new_folder(out: Path) -> None:
    if out.exists():
        raise CheckpointError(f"--out {out} already exists: name a new folder (nothing is ever written over)")
    check_writable(out)


def check_writable(out: Path, flag: str = "--out") -> None:
    """Refuse, before any work, an output path that cannot be created: a file where a folder must be, or a place
    this process cannot write. Probed with a temporary folder in the nearest existing folder above it (removed at
    once), since permissions alone do not tell (root, read-only mounts, /proc)."""
    ancestor = next(p for p in (out, *out.parents) if p.exists())
    if not ancestor.is_dir():
        raise ConfigError(f"{flag} {out}: {ancestor} is a file, not a folder: choose another {flag}")
    try:
        Path(tempfile.mkdtemp(prefix=".write-check-", dir=ancestor)).rmdir()
    except OSError as e:
        raise ConfigError(f"{flag} {out} cannot be written ({e.strerror} in {ancestor}): choose another "
                          f"{flag}") from None


@contextlib.contextmanager
def new_folder(out: Path) -> Iterator[Path]:
    """`build_aside` for a command's --out folder, which must not exist yet (checked before and after filling)."""
    check_new_folder(out)
    with build_aside(out) as tmp:
        yield tmp
        check_new_folder(out)  # something may have appeared there meanwhile


def _json_problem(path: Path, kind: type | None) -> tuple[Any, str | None]:
    """(the JSON value, None), or (None, what is wrong with the file)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "it is missing"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable: {type(e).__name__}"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} at line {e.lineno}"
    if kind is not None and not isinstance(value, kind):
        return None, f"a JSON {type(value).__name__}, not a {kind.__name__}"
    return value, None


def read_json(path: Path, fix: str, error: type[MultitokenError] = CheckpointError, kind: type | None = dict) -> Any:
    """The JSON value in path, or one line: `cannot read PATH (what is wrong): fix`."""
    value, problem = _json_problem(Path(path), kind)
    if problem is not None:
        raise error(f"cannot read {path} ({problem}): {fix}")
    return value


def read_json_or(path: Path, default: Any = None, kind: type | None = dict) -> Any:
    """The JSON value in path, or default when the file is missing, unreadable, not JSON or not of that kind (a
    record that is simply rebuilt when it is lost)."""
    value, problem = _json_problem(Path(path), kind)
    return default if problem is not None else value
