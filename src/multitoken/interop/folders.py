"""Writing a folder all at once: it is assembled under a hidden temporary name beside its destination and renamed
into place, so a failure or a kill leaves nothing at the destination (and a rerun finds it free)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from multitoken.errors import CheckpointError


def check_new_folder(out: Path) -> None:
    if out.exists():
        raise CheckpointError(f"--out {out} already exists: name a new folder (nothing is ever written over)")


@contextmanager
def new_folder(out: Path) -> Iterator[Path]:
    """Yields the temporary folder to fill; on success every file in it is fsynced and it becomes `out`."""
    check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        check_new_folder(out)  # something may have appeared there meanwhile
        os.rename(tmp, out)
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
