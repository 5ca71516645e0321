"""What counts as corpus text, and the one train/validation split rule.

The built-in default corpus is the standard library source of the running Python interpreter: real code, on every
machine, no download. Folders are walked the same way everywhere (sorted, skipping hidden paths, VCS folders and
installed packages), and a document goes to validation when a hash of its name falls below val_fraction: the same on
every machine and every run, so no document leaks across the split. Where the hash leaves a split empty (a corpus of
one file, say), `prepare` holds out the tail of the token stream instead (see prepare.py), so neither split is ever
empty.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git", ".hg", ".svn", "node_modules", ".venv"}
_SNIFF_BYTES = 8192


def default_corpus_root() -> Path:
    return Path(sysconfig.get_path("stdlib"))


def _is_text(path: Path) -> bool:
    """A file counts as text when its first 8 KiB hold no NUL byte (how git and grep tell binary files apart)."""
    with path.open("rb") as f:
        return b"\0" not in f.read(_SNIFF_BYTES)


def _walk(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern)
                  if p.is_file() and not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def is_validation(key: str, val_fraction: float) -> bool:
    """Deterministic split: a document is held out when a hash of its name falls below val_fraction."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()  # names need not be UTF-8
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction
