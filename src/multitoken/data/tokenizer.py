"""Tokenizers. Byte-level is the zero-setup default: every byte is a token, vocabulary 256, nothing to train.
A byte-level BPE (Hugging Face `tokenizers`, the `bpe` extra) is the choice for real corpora: `multitoken tokenizer
train` makes one, and any `tokenizer.json` with an end-of-text token works too (an imported model's own, with its
beginning-of-text token). A SentencePiece `tokenizer.model` (Llama 2 and Meta's multi-token models; the
`sentencepiece` extra) comes with models converted from Meta's format.

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
from multitoken.files import read_json_or

TOKENIZER_FILE = "tokenizer_config.json"
HF_TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"
EOT_TOKEN = "<|endoftext|>"


def id_dtype(vocab_size: int) -> type:
    """The smallest unsigned dtype that holds every token id of a vocabulary this large (above bytes)."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def as_text(text: str | bytes) -> str:
    """A file's raw bytes as text (bytes that are not UTF-8 become U+FFFD), or the text itself."""
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text


class Tokenizer:
    """What every tokenizer provides; the subclasses say how they encode, decode and save their own files.

    kind names the class in tokenizer_config.json, `fingerprint` tells two tokenizers apart, eot_id separates
    documents, bos_id (where there is one) starts every prompt, chat_template (where there is one) turns messages
    into a prompt, dtype is the smallest that holds every id."""

    kind: str
    vocab_size: int
    dtype: type
    eot_id: int
    bos_id: int | None = None
    chat_template: str | None = None
    fingerprint: str
    extra_stop_ids: tuple[int, ...] = ()

    @property
    def stop_ids(self) -> list[int]:
        """Tokens that end a generation: end-of-text, and the end-of-turn tokens some chat models end answers with
        instead (Gemma's <end_of_turn>, listed beside <eos> in its generation_config.json)."""
        return [self.eot_id, *(i for i in self.extra_stop_ids if i != self.eot_id)]

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt as the model saw text in training: its beginning-of-text token first, where it has one."""
        return ([self.bos_id] if self.bos_id is not None else []) + self.encode(text)

    def encode_batch(self, texts: list[str | bytes]) -> list[np.ndarray]:
        """Token ids of each text (or a file's raw bytes), as arrays of `dtype`."""
        return [np.asarray(ids, dtype=self.dtype) for ids in self._encode_texts([as_text(t) for t in texts])]

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def config(self) -> dict:
        """What tokenizer_config.json records (with the files `_save_files` writes, enough to load it again)."""
        return {"kind": self.kind}

    def _save_files(self, directory: Path) -> None:
        """The tokenizer's own files beside tokenizer_config.json (none for bytes)."""

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self._save_files(directory)
        (directory / TOKENIZER_FILE).write_text(json.dumps(self.config()) + "\n")


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens. Decoding replaces byte sequences that are not valid UTF-8 (a sample may end mid-character)."""

    kind = "bytes"
    vocab_size = 256
    dtype = np.uint8  # smallest dtype holding every token id, for the memmap cache
    # Documents are separated by NUL: it never occurs in the text files we read (that is how binary files are told
    # apart), so it is free to mark a document boundary.
    eot_id = 0
    bos_id = None
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


class BPETokenizer(Tokenizer):
    """A Hugging Face `tokenizers.Tokenizer` (normally byte-level BPE) with an end-of-text token between documents."""

    kind = "bpe"

    def __init__(self, tokenizer, eot_token: str = EOT_TOKEN, source: str = "the tokenizer",
                 bos_token: str | None = None, chat_template: str | None = None,
                 stop_tokens: list[str] | None = None):
        eot_id = tokenizer.token_to_id(eot_token)
        if eot_id is None:
            raise ConfigError(f"{source} has no {eot_token!r} token to separate documents: train one with `multitoken "
                              "tokenizer train`, or name its end-of-text token in a tokenizer_config.json beside it, "
                              'e.g. {"eot_token": "</s>"}')
        # The token a model was trained to see first (Llama's <s>): prompts get it, training data and files do not.
        self.bos_token = bos_token
        self.bos_id = tokenizer.token_to_id(bos_token) if bos_token else None
        if bos_token and self.bos_id is None:
            raise ConfigError(f"{source} has no beginning-of-text token {bos_token!r}")
        # The model's chat template (Jinja, as Hugging Face and GGUF files carry it): how `--chat` turns messages
        # into a prompt. Not part of the fingerprint: it does not change how any text is tokenized.
        self.chat_template = chat_template or None
        # Other tokens that end a generation (end of turn), where the model has them; unknown ones are left out.
        self.stop_tokens = [t for t in (stop_tokens or []) if t != eot_token and tokenizer.token_to_id(t) is not None]
        self.extra_stop_ids = tuple(tokenizer.token_to_id(t) for t in self.stop_tokens)
        self._tok = tokenizer
        # Document text that happens to contain "<|endoftext|>" is encoded as plain text: document boundaries come
        # from the data layout alone, never from what a document says. (Not serialized, so the fingerprint is unmoved.)
        self._tok.encode_special_tokens = True
        self.eot_token = eot_token
        self.eot_id = eot_id
        self.vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        self.dtype = id_dtype(self.vocab_size)

    @classmethod
    def from_file(cls, path: Path, eot_token: str | None = None, bos_token: str | None = None,
                  chat_template: str | None = None, stop_tokens: list[str] | None = None) -> BPETokenizer:
        Tokenizer = require_tokenizers().Tokenizer
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception with serde's message
            raise ConfigError(f"{path} is not a valid tokenizer.json ({str(e).splitlines()[0][:200]}): point "
                              "--tokenizer at a tokenizer.json saved by Hugging Face tokenizers") from None
        return cls(tokenizer, eot_token or _eot_token_beside(path), source=str(path), bos_token=bos_token,
                   chat_template=chat_template, stop_tokens=stop_tokens)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the canonical tokenizer.json (keys sorted, no whitespace) and the end-of-text (and
        beginning-of-text, where there is one) token."""
        canonical = json.dumps(json.loads(self._tok.to_str()), sort_keys=True, separators=(",", ":"))
        bos = f"\0{self.bos_token}" if self.bos_token else ""
        return hashlib.sha256(f"{canonical}\0{self.eot_token}{bos}".encode("utf-8")).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_special(self, text: str) -> list[int]:
        """Token ids of text written with special tokens (a rendered chat template): each is one id."""
        self._tok.encode_special_tokens = False
        try:
            return self._tok.encode(text, add_special_tokens=False).ids
        finally:
            self._tok.encode_special_tokens = True

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """In parallel across texts (Rust threads)."""
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)  # _fast skips offsets (>= 0.21)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def config(self) -> dict:
        config = {"kind": self.kind, "eot_token": self.eot_token}
        if self.bos_token:
            config["bos_token"] = self.bos_token
        if self.chat_template:
            config["chat_template"] = self.chat_template
        if self.stop_tokens:
            config["stop_tokens"] = self.stop_tokens
        return config

    def _save_files(self, directory: Path) -> None:
        self._tok.save(str(directory / HF_TOKENIZER_FILE))


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (`tokenizer.model`: Llama 2, Meta's multi-token models), through the `sentencepiece`
    library. End-of-text is its eos piece, and prompts start with its bos piece, as the models were trained."""

    kind = "sentencepiece"

    def __init__(self, model_bytes: bytes, source: str = "the tokenizer") -> None:
        spm = require_sentencepiece()
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        except Exception as e:  # sentencepiece raises RuntimeError or OSError with a C++ message
            raise ConfigError(f"{source} is not a SentencePiece model ({str(e).splitlines()[0][:120]}); Llama 3's "
                              "tokenizer.model is tiktoken's format: use its Hugging Face tokenizer.json instead") from None
        self._model_bytes = model_bytes
        self.eot_id = self._sp.eos_id()
        if self.eot_id < 0:
            raise ConfigError(f"{source} has no end-of-sentence piece to separate documents")
        self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
        self.vocab_size = self._sp.get_piece_size()
        self.dtype = id_dtype(self.vocab_size)
        self.fingerprint = hashlib.sha256(model_bytes).hexdigest()

    @classmethod
    def from_file(cls, path: Path) -> SentencePieceTokenizer:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        return cls(data, source=str(path))

    def __getstate__(self) -> dict:  # prepare's worker processes receive tokenizers by pickling
        return {"model_bytes": self._model_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_bytes"])

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def _save_files(self, directory: Path) -> None:
        (directory / SENTENCEPIECE_FILE).write_bytes(self._model_bytes)


def require_sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise ConfigError("SentencePiece tokenizers (tokenizer.model) need the sentencepiece package: pip install "
                          "'multitoken[sentencepiece]'") from None
    return sentencepiece


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
    values = read_json_or(config, {})
    token = values.get("eot_token") or values.get("eos_token")
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) and token else EOT_TOKEN


def build_tokenizer(spec: str) -> Tokenizer:
    """'bytes', or a path: a folder a tokenizer saved itself into (a checkpoint, a prepared-data folder, an exported
    or converted model), a folder holding tokenizer.json or tokenizer.model, or one of those files."""
    if spec == "bytes":
        return ByteTokenizer()
    path = Path(spec).expanduser()
    if path.is_dir():
        if _saved_by_multitoken(path / TOKENIZER_FILE):
            return load_tokenizer(path)
        if (path / HF_TOKENIZER_FILE).is_file():
            return BPETokenizer.from_file(path / HF_TOKENIZER_FILE)
        if (path / SENTENCEPIECE_FILE).is_file():
            return SentencePieceTokenizer.from_file(path / SENTENCEPIECE_FILE)
        raise ConfigError(f"tokenizer folder {path} holds no tokenizer.json: train one with `multitoken tokenizer "
                          "train --out DIR`")
    if path.is_file():
        if path.suffix == ".model":
            return SentencePieceTokenizer.from_file(path)
        return BPETokenizer.from_file(path)
    raise ConfigError(f"unknown tokenizer {spec!r}: use 'bytes' or the path of a tokenizer folder, tokenizer.json "
                      "or tokenizer.model (`multitoken tokenizer train` makes one)")


def _saved_by_multitoken(path: Path) -> bool:
    """Whether a tokenizer_config.json is ours ({"kind": ...}) rather than a Hugging Face model's."""
    return "kind" in read_json_or(path, {})


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
            return BPETokenizer.from_file(hf_path, config.get("eot_token") or EOT_TOKEN, config.get("bos_token"),
                                          config.get("chat_template"), config.get("stop_tokens"))
        except ConfigError as e:
            raise CheckpointError(f"{e} (in {directory}: the checkpoint is damaged, pick another one)") from None
    if kind == "sentencepiece":
        sp_path = Path(directory) / SENTENCEPIECE_FILE
        if not sp_path.is_file():
            raise CheckpointError(f"{sp_path} is missing: the checkpoint is incomplete, pick another one")
        return SentencePieceTokenizer.from_file(sp_path)
    raise CheckpointError(f"{path} names an unknown tokenizer kind {kind!r}: it was saved by a newer multitoken; "
                          "upgrade multitoken")
