"""Finding training text: the built-in default corpus and the user's own files and folders, split by file.

The default corpus is the standard library source of the running Python interpreter: real code, on every machine,
no download. The train/validation split is by file and depends only on each file's path relative to its root, so it
is the same on every machine and every run, and no file leaks across the split.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from multitoken.errors import DataError

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git", ".hg", ".svn", "node_modules", ".venv"}
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class SourceFile:
    path: Path
    key: str  # stable name for splitting: the path relative to the root it was found under

    def read(self) -> bytes:
        return self.path.read_bytes()


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


def find_sources(paths: list[str] | None) -> list[SourceFile]:
    """The files to tokenize, sorted. None means the default corpus (every .py file of the standard library)."""
    if paths is None:
        root = default_corpus_root()
        return [SourceFile(p, p.relative_to(root).as_posix()) for p in _walk(root, "*.py")]
    sources: list[SourceFile] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            sources.append(SourceFile(path, path.name))
        elif path.is_dir():
            found = [p for p in _walk(path, "*") if _is_text(p)]
            if not found:
                raise DataError(f"no text files found under {path}: point --data.path at a file or a folder of "
                                "text files")
            sources += [SourceFile(p, p.relative_to(path).as_posix()) for p in found]
        else:
            raise DataError(f"data path {path} does not exist: check the path given to --data.path")
    return sources


def is_validation(key: str, val_fraction: float) -> bool:
    """Deterministic split: a file is held out when a hash of its relative path falls below val_fraction."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()  # names need not be UTF-8
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def split_sources(sources: list[SourceFile], val_fraction: float) -> tuple[list[SourceFile], list[SourceFile]]:
    """Train and validation files. Guarantees both sides non-empty when there are at least two files."""
    train = [s for s in sources if not is_validation(s.key, val_fraction)]
    val = [s for s in sources if is_validation(s.key, val_fraction)]
    if len(sources) >= 2 and not val:  # tiny corpus: hold out the file whose hash is lowest
        val = [min(sources, key=lambda s: hashlib.sha256(s.key.encode("utf-8", "surrogateescape")).digest())]
        train = [s for s in sources if s not in val]
    if len(sources) >= 2 and not train:
        train, val = val[:1], val[1:]
    return train, val
