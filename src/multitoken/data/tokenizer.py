"""Tokenizers. Byte-level is the zero-setup default: every byte is a token, vocabulary 256, nothing to train.

A tokenizer saves itself into every checkpoint (`tokenizer_config.json`), so `generate` and `eval` never need it
named again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from multitoken.errors import CheckpointError, ConfigError

TOKENIZER_FILE = "tokenizer_config.json"


class ByteTokenizer:
    """UTF-8 bytes as tokens. Decoding replaces byte sequences that are not valid UTF-8 (a sample may end mid-character)."""

    kind = "bytes"
    vocab_size = 256
    dtype = np.uint8  # smallest dtype holding every token id, for the memmap cache

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> np.ndarray:
        """Raw file bytes straight to token ids, without a round trip through str."""
        return np.frombuffer(data, dtype=np.uint8)

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def save(self, directory: Path) -> None:
        (Path(directory) / TOKENIZER_FILE).write_text(json.dumps({"kind": self.kind}) + "\n")


def build_tokenizer(kind: str) -> ByteTokenizer:
    if kind == "bytes":
        return ByteTokenizer()
    raise ConfigError(f"unknown tokenizer {kind!r}: use 'bytes'")


def load_tokenizer(directory: Path) -> ByteTokenizer:
    path = Path(directory) / TOKENIZER_FILE
    try:
        kind = json.loads(path.read_text())["kind"]
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete, pick another one") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{path} is corrupt: the checkpoint is damaged, pick another one") from None
    return build_tokenizer(kind)
