"""Writing a small file so that a kill at any moment leaves either the old contents or the new, never half of them."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write text beside path, flush it to disk, then rename it over path (a rename within a folder is atomic)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
