r"""Documents from text files, JSON Lines and Parquet, read in bounded pieces so memory never scales with a file.

A text file is one document; a `.jsonl` file holds one document per line (a string field of a JSON object); a
`.parquet` file one document per row (a string column). Every source is cut into pieces (byte ranges, or row-group
ranges for Parquet) that can be tokenized independently, and each piece is read as a stream of segments of tens of
kilobytes.

Cutting a text file must not change its tokens. Byte-level BPE first splits text with the GPT-2 regex
(`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`), and BPE merges never cross its
pieces. Only whitespace pieces contain whitespace other than one leading space, so a non-blank character followed by
whitespace always ends a piece, one that needed no look-ahead; and the regex never looks behind, so from there it goes
on exactly as it would have in the whole file. Text is cut only at such points,

    word|␣next    word|\nnext    (a printable non-space ASCII character, then a space, tab, CR or LF)

so tokenizing the pieces one by one gives exactly the tokens of the whole file (a test checks it against tokenizing
whole). ASCII only, so that no Unicode space can hide on either side. A stretch of 1 MiB without such a point (one
enormous word) is cut at a line break, or failing that at a character boundary: the decoded text is still exact,
only the token boundaries at that cut may differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from multitoken.data.corpus import _is_text, _walk, default_corpus_root
from multitoken.errors import ConfigError, DataError

SEGMENT_BYTES = 1 << 16  # a segment is tokenized as one string: large enough to amortize calls, small for memory
_MAX_SEGMENT_BYTES = 1 << 20  # past this without an exact cut point, fall back to a plain line break
_EXACT_CUT = re.compile(rb"(?<=[\x21-\x7e])(?=[ \t\n\r])")  # zero-width: the exact cut points above
_PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class Source:
    path: Path
    key: str  # stable name: the path relative to the folder it was found under (or the file name)
    kind: str  # "text", "jsonl" or "parquet"
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Piece:
    """Part of a source tokenized as one unit: bytes [start, end) of a text or JSONL file, or row groups [start, end)
    of a Parquet file. `weight` is the input bytes it stands for (progress, and packing pieces into units)."""

    source: Source
    start: int
    end: int
    weight: int


@dataclass(frozen=True)
class Segment:
    doc_key: str  # names the document for the train/validation split
    text: str | bytes
    end_of_doc: bool  # the last segment of a document: an end-of-text token follows
    nbytes: int  # input bytes consumed, for progress


def _kind(path: Path) -> str:
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}.get(path.suffix.lower(), "text")


def _source(path: Path, key: str) -> Source:
    try:
        st = path.stat()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    return Source(path, key, _kind(path), st.st_size, st.st_mtime_ns)


def default_corpus_sources() -> list[Source]:
    """The built-in default corpus: every .py file of this Python's standard library, named relative to it."""
    root = default_corpus_root()
    return [_source(p, p.relative_to(root).as_posix()) for p in _walk(root, "*.py")]


def find_document_sources(paths: list[str]) -> list[Source]:
    """Files and folders to sources. In a folder: every .jsonl and .parquet file, and every other text file. A file
    named twice (directly, or in two folders given) is read once."""
    sources, seen = [], set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            if _kind(path) == "text" and not _is_text(path):
                shard = "if it is a token shard, pass the prepared folder that holds it; otherwise " \
                    if path.suffix == ".bin" else ""
                raise DataError(f"data file {path} is binary (a NUL byte in its first 8 KiB), not text: {shard}give "
                                "text, .jsonl or .parquet files (folders skip binary files)")
            sources.append(_source(path, path.name))
        elif path.is_dir():
            found = [p for p in _walk(path, "*") if _kind(p) != "text" or _is_text(p)]
            if not found:
                raise DataError(f"no text, .jsonl or .parquet files found under {path}: point --data at your data")
            sources += [_source(p, p.relative_to(path).as_posix()) for p in found]
        elif path.exists():
            raise DataError(f"data path {path} is not a regular file or folder: give text, .jsonl or .parquet files "
                            "or folders")
        else:
            raise DataError(f"data path {path} does not exist: check the paths given to --data")
    unique = []
    for source in sources:
        if (resolved := source.path.resolve()) not in seen:
            seen.add(resolved)
            unique.append(source)
    if unique and not any(source.size for source in unique):
        raise DataError(f"--data {' '.join(map(str, paths))} holds no text (every file is empty): give files with "
                        "text in them")
    return unique


# --- cutting sources into pieces ------------------------------------------------------------------------------------

def _open(source: Source):
    try:
        return source.path.open("rb")
    except OSError as e:
        raise DataError(f"cannot read {source.path}: {e.strerror}") from None


def _char_boundary(buf: bytes, cut: int) -> int:
    while 0 < cut < len(buf) and 0x80 <= buf[cut] < 0xC0:  # never split a UTF-8 character
        cut -= 1
    return cut


def _cut_after(f, pos: int, exact: bool) -> int:
    """The first cut at or after byte pos: an exact cut point when asked (text), else after a line break (JSONL)."""
    base = max(pos - 1, 0)  # one byte of look-behind
    f.seek(base)
    window = f.read(_MAX_SEGMENT_BYTES + 4)
    if len(window) <= pos - base:
        return pos  # at or past the end
    if exact:
        match = _EXACT_CUT.search(window, pos - base)
        return base + match.start() if match else base + _char_boundary(window, pos - base)
    # JSONL: only ever after a line break, however long the line (a cut inside a record would break it in two).
    start = pos - base
    while True:
        newline = window.find(b"\n", start)
        if newline != -1:
            return base + newline + 1
        if len(window) < _MAX_SEGMENT_BYTES + 4:  # reached the end of the file inside the last line
            return base + len(window)
        base += len(window)
        start = 0
        window = f.read(_MAX_SEGMENT_BYTES + 4)
        if not window:
            return base


def _require_pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading .parquet files needs pyarrow: pip install 'multitoken[parquet]'") from None
    return pq


def _parquet_file(source: Source):
    pq = _require_pyarrow()

    try:
        return pq.ParquetFile(source.path)
    except OSError as e:
        raise DataError(f"cannot read {source.path}: {e.strerror or e}") from None
    except Exception as e:  # pyarrow's ArrowInvalid: not a Parquet file, or a damaged one
        reason = str(e).splitlines()[0][:200]
        raise DataError(f"cannot read {source.path} as Parquet ({reason}): check the file") from None


def check_sources(sources: list[Source], parquet_column: str) -> None:
    """Fail before any work when a Parquet file lacks the text column (naming the columns it has)."""
    for source in sources:
        if source.kind == "parquet":
            check_parquet_column(source, parquet_column)


def check_parquet_column(source: Source, column: str) -> None:
    _require_pyarrow()
    import pyarrow as pa

    schema = _parquet_file(source).schema_arrow
    if column not in schema.names:
        raise DataError(f"{source.path} has no column {column!r}: pass --parquet-column NAME (columns: "
                        f"{', '.join(schema.names)})")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or str(kind) == "string_view"):
        raise DataError(f"column {column!r} of {source.path} holds {kind}, not text: pass --parquet-column with a "
                        "string column")


def _parquet_pieces(source: Source, target: int) -> list[Piece]:
    meta = _parquet_file(source).metadata
    rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    total = max(sum(rows), 1)
    weight_upto = lambda r: source.size * r // total  # noqa: E731  (a row group's share of the file, in bytes)
    pieces, first, row, first_row = [], 0, 0, 0
    for i, n in enumerate(rows):
        row += n
        if weight_upto(row) - weight_upto(first_row) >= target or i == len(rows) - 1:
            pieces.append(Piece(source, first, i + 1, weight_upto(row) - weight_upto(first_row)))
            first, first_row = i + 1, row
    return pieces or [Piece(source, 0, 0, source.size)]


def split_source(source: Source, target: int) -> list[Piece]:
    """Pieces of about `target` input bytes (at least one per source)."""
    if source.kind == "parquet":
        return _parquet_pieces(source, target)
    cuts = [0]
    with _open(source) as f:
        while cuts[-1] + target < source.size:
            cut = _cut_after(f, cuts[-1] + target, exact=source.kind == "text")
            if cut >= source.size:
                break
            cuts.append(cut)
    cuts.append(source.size)
    return [Piece(source, a, b, b - a) for a, b in zip(cuts, cuts[1:])]


# --- reading pieces as segments -------------------------------------------------------------------------------------

def _last_exact_cut(buf: bytes) -> int | None:
    """The last exact cut point in buf, or None. Searches growing tails, so the cost stays linear."""
    span = 4096
    while True:
        start = max(len(buf) - span, 0)
        last = None
        for last in _EXACT_CUT.finditer(buf, start):
            pass
        if last is not None:
            return last.start()
        if start == 0:
            return None
        span *= 4


def _text_segments(piece: Piece) -> Iterator[Segment]:
    source = piece.source
    last = piece.end == source.size
    with _open(source) as f:
        f.seek(piece.start)
        pos, buf, need = piece.start, b"", SEGMENT_BYTES
        while True:
            while len(buf) < need and pos < piece.end:
                data = f.read(min(SEGMENT_BYTES, piece.end - pos))
                if not data:
                    raise DataError(f"{source.path} shrank while it was being read: rerun when nothing writes to it")
                buf, pos = buf + data, pos + len(data)
            if pos >= piece.end:  # the rest of the piece is in hand: the final segment
                if buf:
                    yield Segment(source.key, buf, last, len(buf))
                return
            cut = _last_exact_cut(buf)
            if cut is None and len(buf) < _MAX_SEGMENT_BYTES:
                need = len(buf) + SEGMENT_BYTES  # no exact cut yet: read on, up to the bound
                continue
            if cut is None:
                cut = buf.rfind(b"\n") + 1 or _char_boundary(buf, len(buf) - 1) or len(buf)
            yield Segment(source.key, buf[:cut], False, cut)
            buf, need = buf[cut:], SEGMENT_BYTES


def line_number(path: Path, offset: int) -> int:
    """1-based number of the line starting at byte offset (counted only when an error needs it)."""
    count = 0
    with path.open("rb") as f:
        while offset > 0:
            block = f.read(min(offset, 1 << 20))
            count, offset = count + block.count(b"\n"), offset - len(block)
    return count + 1


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _jsonl_text(line: bytes, field: str, where) -> str | None:
    try:
        record = json.loads(line)
    except ValueError as e:
        raise DataError(f"{where()} is not valid JSON ({getattr(e, 'msg', e)}): fix or remove the line") from None
    if not isinstance(record, dict) or field not in record:
        fields = f"fields: {', '.join(map(str, record))}" if isinstance(record, dict) else "not a JSON object"
        raise DataError(f"{where()} has no {field!r} field ({fields}): pass --jsonl-field NAME")
    text = record[field]
    if text is not None and not isinstance(text, str):
        raise DataError(f"{where()}: field {field!r} holds {type(text).__name__}, not a string: pass --jsonl-field "
                        "with a text field")
    if text:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape (a truncated emoji in scraped data) has no UTF-8 form:
            text = _LONE_SURROGATE.sub("\ufffd", text)  # U+FFFD, as UTF-8 decoders do for bad bytes
    return text


def _jsonl_segments(piece: Piece, field: str) -> Iterator[Segment]:
    source = piece.source
    with _open(source) as f:
        f.seek(piece.start)
        offset = piece.start
        while offset < piece.end and (line := f.readline()):
            start, offset = offset, offset + len(line)
            if line.strip():
                text = _jsonl_text(line, field, lambda: f"{source.path} line {line_number(source.path, start)}")
                if text:
                    yield Segment(f"{source.key}@{start}", text, True, len(line))


def _parquet_segments(piece: Piece, column: str) -> Iterator[Segment]:
    source = piece.source
    parquet = _parquet_file(source)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(piece.end)]
    row, rows_in_piece = sum(sizes[:piece.start]), max(sum(sizes[piece.start:]), 1)
    done, reported = 0, 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=list(range(piece.start, piece.end)),
                                      columns=[column]):
        for text in batch.column(0).to_pylist():
            done, row = done + 1, row + 1
            if text:
                share = piece.weight * done // rows_in_piece  # the piece's bytes spread over its rows, for progress
                yield Segment(f"{source.key}#{row - 1}", text, True, share - reported)
                reported = share


def read_segments(piece: Piece, jsonl_field: str = "text", parquet_column: str = "text") -> Iterator[Segment]:
    """The piece's documents as segments, in file order. Empty documents are skipped, so the segments' nbytes may
    add up to less than the piece's weight."""
    if piece.source.kind == "jsonl":
        return _jsonl_segments(piece, jsonl_field)
    if piece.source.kind == "parquet":
        return _parquet_segments(piece, parquet_column)
    return _text_segments(piece)
