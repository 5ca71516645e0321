"""Training a byte-level BPE tokenizer (GPT-2 style) with Hugging Face `tokenizers`, streaming over the corpus.

Byte-level means the 256 byte values are the base alphabet: any text encodes, nothing is ever unknown, and decoding
gives back the exact bytes. `<|endoftext|>` is the only special token; it gets id 0, the same id that separates
documents in the byte-level tokenizer. The trainer sees the corpus through an iterator of segments (tens of kilobytes
each, cut where the pre-tokenizer would split anyway), so memory depends on the number of distinct words, not on the
corpus size.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from multitoken.data.documents import Source, read_segments, split_source
from multitoken.data.tokenizer import EOT_TOKEN, BPETokenizer, require_tokenizers
from multitoken.errors import ConfigError, DataError

MIN_VOCAB_SIZE = 257  # the 256 bytes and <|endoftext|>
MAX_VOCAB_SIZE = 1 << 20  # 4x the largest vocabularies in use; far above it the trainer aborts, out of memory


@dataclass
class CorpusReader:
    """Iterates the text of every document in the sources, stopping after about max_bytes (None: all of it)."""

    sources: list[Source]
    jsonl_field: str = "text"
    parquet_column: str = "text"
    max_bytes: int | None = None
    bytes_read: int = 0
    documents: int = 0

    def __iter__(self) -> Iterator[str]:
        for source in self.sources:
            for piece in split_source(source, 1 << 62):  # one piece per source: a stream, read in segments
                for segment in read_segments(piece, self.jsonl_field, self.parquet_column):
                    text = segment.text
                    yield text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
                    self.bytes_read += segment.nbytes
                    self.documents += segment.end_of_doc
                    if self.max_bytes is not None and self.bytes_read >= self.max_bytes:
                        return


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
    """A byte-level BPE of at most vocab_size tokens (fewer when the text has no more pairs to merge)."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 bytes + {EOT_TOKEN}), got {vocab_size}")
    if vocab_size > MAX_VOCAB_SIZE:
        raise ConfigError(f"--vocab-size must be at most {MAX_VOCAB_SIZE:,} (got {vocab_size:,}): real vocabularies "
                          "stay under 300k")
    if min_frequency < 1:
        raise ConfigError(f"--min-frequency must be at least 1 (got {min_frequency})")
    tk = require_tokenizers()
    tokenizer = tk.Tokenizer(tk.models.BPE())
    # add_prefix_space=False: a text is encoded as it is, so tokenizing a file in segments changes nothing.
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT_TOKEN],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tokenizer, EOT_TOKEN, source="the trained tokenizer")


@dataclass
class TrainResult:
    tokenizer: BPETokenizer
    documents: int
    bytes_read: int
    seconds: float


def train_bpe_on_sources(sources: list[Source], vocab_size: int, min_frequency: int = 2,
                         max_bytes: int | None = None, jsonl_field: str = "text",
                         parquet_column: str = "text") -> TrainResult:
    reader = CorpusReader(sources, jsonl_field, parquet_column, max_bytes)
    start = time.perf_counter()
    tokenizer = train_bpe(reader, vocab_size, min_frequency)
    if reader.bytes_read == 0:
        raise DataError("the training text is empty: point --data at files with text in them")
    return TrainResult(tokenizer, reader.documents, reader.bytes_read, time.perf_counter() - start)
