"""Tokenizers. Byte-level is the zero-setup default: every byte is a token, vocabulary 256, nothing to train.
A byte-level BPE (Hugging Face `tokenizers`, the `bpe` extra) is the choice for real corpora: `multitoken tokenizer
train` makes one, and any `tokenizer.json` with an end-of-text token works too.

A tokenizer saves itself into every checkpoint and prepared-data folder (`tokenizer_config.json`, plus `tokenizer.json`
for BPE), so `generate`, `eval` and training on prepared data never need it named again. Its `fingerprint` tells two
tokenizers apart: data tokenized by one must not be trained on with another.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

import numpy as np

from multitoken.errors import CheckpointError, ConfigError

TOKENIZER_FILE = "tokenizer_config.json"
HF_TOKENIZER_FILE = "tokenizer.json"
EOT_TOKEN = "<|endoftext|>"


class ByteTokenizer:
    """UTF-8 bytes as tokens. Decoding replaces byte sequences that are not valid UTF-8 (a sample may end mid-character)."""

    kind = "bytes"
    vocab_size = 256
    dtype = np.uint8  # smallest dtype holding every token id, for the memmap cache
    # Documents are separated by NUL: it never occurs in the text files we read (that is how binary files are told
    # apart), so it is free to mark a document boundary.
    eot_id = 0
    fingerprint = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> np.ndarray:
        """Raw file bytes straight to token ids, without a round trip through str."""
        return np.frombuffer(data, dtype=np.uint8)

    def encode_batch(self, texts: list[str | bytes]) -> list[np.ndarray]:
        return [self.encode_bytes(t if isinstance(t, bytes) else t.encode("utf-8")) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def save(self, directory: Path) -> None:
        (Path(directory) / TOKENIZER_FILE).write_text(json.dumps({"kind": self.kind}) + "\n")


class BPETokenizer:
    """A Hugging Face `tokenizers.Tokenizer` (normally byte-level BPE) with an end-of-text token between documents."""

    kind = "bpe"

    def __init__(self, tokenizer, eot_token: str = EOT_TOKEN, source: str = "the tokenizer"):
        eot_id = tokenizer.token_to_id(eot_token)
        if eot_id is None:
            raise ConfigError(f"{source} has no {eot_token!r} token to separate documents: train one with `multitoken "
                              "tokenizer train`, or name its end-of-text token in a tokenizer_config.json beside it, "
                              'e.g. {"eot_token": "</s>"}')
        self._tok = tokenizer
        # Document text that happens to contain "<|endoftext|>" is encoded as plain text: document boundaries come
        # from the data layout alone, never from what a document says. (Not serialized, so the fingerprint is unmoved.)
        self._tok.encode_special_tokens = True
        self.eot_token = eot_token
        self.eot_id = eot_id
        self.vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        self.dtype = np.uint16 if self.vocab_size <= 2**16 else np.uint32

    @classmethod
    def from_file(cls, path: Path, eot_token: str | None = None) -> BPETokenizer:
        Tokenizer = require_tokenizers().Tokenizer
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception with serde's message
            raise ConfigError(f"{path} is not a valid tokenizer.json ({str(e).splitlines()[0][:200]}): point "
                              "--tokenizer at a tokenizer.json saved by Hugging Face tokenizers") from None
        return cls(tokenizer, eot_token or _eot_token_beside(path), source=str(path))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the canonical tokenizer.json (keys sorted, no whitespace) and the end-of-text token."""
        canonical = json.dumps(json.loads(self._tok.to_str()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{canonical}\0{self.eot_token}".encode("utf-8")).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str | bytes]) -> list[np.ndarray]:
        """Token ids of each text, in parallel across texts (Rust threads). Bytes that are not UTF-8 become U+FFFD."""
        texts = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else t for t in texts]
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)  # _fast skips offsets (>= 0.21)
        return [np.asarray(e.ids, dtype=self.dtype) for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self._tok.save(str(directory / HF_TOKENIZER_FILE))
        (directory / TOKENIZER_FILE).write_text(json.dumps({"kind": self.kind, "eot_token": self.eot_token}) + "\n")


Tokenizer = ByteTokenizer | BPETokenizer


def require_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ConfigError("BPE tokenizers need the tokenizers package: pip install 'multitoken[bpe]'") from None
    return tokenizers


def _eot_token_beside(path: Path) -> str:
    """The end-of-text token named in a tokenizer_config.json next to tokenizer.json: ours ("eot_token") or a
    Hugging Face model's ("eos_token", a string or {"content": ...}); "<|endoftext|>" when there is none."""
    config = Path(path).with_name(TOKENIZER_FILE)
    try:
        values = json.loads(config.read_text())
    except (OSError, ValueError):
        return EOT_TOKEN
    token = values.get("eot_token") or values.get("eos_token") if isinstance(values, dict) else None
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) and token else EOT_TOKEN


def build_tokenizer(spec: str) -> Tokenizer:
    """'bytes', or a path: a folder holding tokenizer.json (or any folder a tokenizer saved itself into, such as a
    checkpoint), or a tokenizer.json file."""
    if spec == "bytes":
        return ByteTokenizer()
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / HF_TOKENIZER_FILE).is_file():
            return BPETokenizer.from_file(path / HF_TOKENIZER_FILE)
        if (path / TOKENIZER_FILE).is_file():
            return load_tokenizer(path)
        raise ConfigError(f"tokenizer folder {path} holds no tokenizer.json: train one with `multitoken tokenizer "
                          "train --out DIR`")
    if path.is_file():
        return BPETokenizer.from_file(path)
    raise ConfigError(f"unknown tokenizer {spec!r}: use 'bytes' or the path of a tokenizer folder or tokenizer.json "
                      "(`multitoken tokenizer train` makes one)")


def load_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer a checkpoint (or prepared-data folder) saved into `directory`."""
    path = Path(directory) / TOKENIZER_FILE
    try:
        config = json.loads(path.read_text())
        kind = config["kind"]
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete, pick another one") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{path} is corrupt: the checkpoint is damaged, pick another one") from None
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "bpe":
        hf_path = Path(directory) / HF_TOKENIZER_FILE
        if not hf_path.is_file():
            raise CheckpointError(f"{hf_path} is missing: the checkpoint is incomplete, pick another one")
        try:
            return BPETokenizer.from_file(hf_path, config.get("eot_token") or EOT_TOKEN)
        except ConfigError as e:
            raise CheckpointError(f"{e} (in {directory}: the checkpoint is damaged, pick another one)") from None
    raise CheckpointError(f"{path} names an unknown tokenizer kind {kind!r}: it was saved by a newer multitoken; "
                          "upgrade multitoken")
