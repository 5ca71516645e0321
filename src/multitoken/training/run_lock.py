"""One writer per run directory.

Two processes training into one out_dir would append every metrics record twice, delete each other's checkpoints
mid-save and leave a config.yaml that matches neither. The writer holds an advisory lock (`flock`) on
`<out_dir>/.lock` for as long as it runs. The kernel drops the lock when its holder dies, however it dies (kill -9
included), so a lock left behind by a killed run is simply free again: there is no stale-lock guessing. The file
keeps the holder's pid and host only to name them in the refusal.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from multitoken.errors import ConfigError
from multitoken.files import fcntl, make_folder  # fcntl None on Windows: no flock, runs there go unguarded, as before

LOCK_NAME = ".lock"


class RunLock:
    """Exclusive lock on a run directory; `release()` (or process exit) frees it."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self._file = None

    def acquire(self) -> RunLock:
        make_folder(self.path.parent, "--out_dir")
        f = self.path.open("a+")
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise ConfigError(f"{self.path.parent} is in use by another training run ({holder}): wait for it to "
                                  "finish, stop it, or train into another --out_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
