"""Reading sources in pieces and segments: nothing lost or reordered, and cuts that leave BPE tokens unchanged."""

from __future__ import annotations

import json

import pytest

from multitoken.data import documents
from multitoken.data.documents import find_document_sources, read_segments, split_source
from multitoken.data.tokenizer import build_tokenizer
from multitoken.errors import DataError
from tests.data.conftest import lines, write_parquet


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(documents, "SEGMENT_BYTES", 256)
    monkeypatch.setattr(documents, "_MAX_SEGMENT_BYTES", 1024)


def _segments(source, target, **kw):
    return [seg for piece in split_source(source, target) for seg in read_segments(piece, **kw)]


def test_sources_by_kind_in_folders(mixed_corpus):
    (mixed_corpus / "docs" / "blob.bin").write_bytes(bytes(range(256)))
    kinds = {s.key: s.kind for s in find_document_sources([str(mixed_corpus)])}
    assert kinds["rows.jsonl"] == "jsonl" and kinds["table.parquet"] == "parquet" and kinds["docs/big.txt"] == "text"
    assert "docs/blob.bin" not in kinds
    with pytest.raises(DataError, match="does not exist"):
        find_document_sources([str(mixed_corpus / "nope")])


@pytest.mark.parametrize("target", [100, 1000, 1 << 30])
def test_text_pieces_and_segments_cover_the_file_in_order(mixed_corpus, small_segments, target):
    source = next(s for s in find_document_sources([str(mixed_corpus)]) if s.key == "docs/big.txt")
    pieces = split_source(source, target)
    assert pieces[0].start == 0 and pieces[-1].end == source.size
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))
    segs = _segments(source, target)
    assert b"".join(s.text for s in segs) == source.path.read_bytes()
    assert [s.end_of_doc for s in segs] == [False] * (len(segs) - 1) + [True]
    assert sum(s.nbytes for s in segs) == source.size and len(segs) > 1


@pytest.mark.parametrize("spaces", [True, False])
def test_segment_cuts_leave_bpe_tokens_unchanged(bpe_dir, tmp_path, small_segments, spaces):
    tok = build_tokenizer(str(bpe_dir))
    text = "\n".join(lines(7, 400)).replace("fox", "fox\n\n   \n").replace("brown", "brown  \t ") + "\n"
    if not spaces:
        text = text.replace(" ", "").replace("quick", "quick\t\t\r\n")
    path = tmp_path / "f.txt"
    path.write_text(text)
    source = find_document_sources([str(path)])[0]
    segs = _segments(source, 3000)
    assert len(segs) > 10
    assert sum((ids.tolist() for ids in tok.encode_batch([s.text for s in segs])), []) == tok.encode(text)


def test_a_file_without_exact_cut_points_is_still_bounded_and_exact(tmp_path, small_segments):
    path = tmp_path / "crlf.txt"
    path.write_bytes(("ünï ünï\r\n" * 500).encode())  # whitespace only after non-ASCII: no exact cut point
    segs = _segments(find_document_sources([str(path)])[0], 1 << 30)
    assert max(len(s.text) for s in segs) <= 1024 + 256
    assert b"".join(s.text for s in segs) == path.read_bytes()
    for s in segs:
        s.text.decode("utf-8")  # cut at line breaks or character boundaries only


def test_jsonl_documents_and_keys(mixed_corpus):
    source = next(s for s in find_document_sources([str(mixed_corpus)]) if s.kind == "jsonl")
    for target in (200, 1 << 30):
        segs = _segments(source, target)
        texts = [json.loads(line)["text"] for line in source.path.read_text().splitlines() if line.strip()]
        assert [s.text for s in segs] == texts and all(s.end_of_doc for s in segs)
        assert segs[1].doc_key.startswith("rows.jsonl@") and len({s.doc_key for s in segs}) == len(segs)


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n\n{"body": "b"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 3 has no 'text' field \(fields: body\).*--jsonl-field"):
        _segments(find_document_sources([str(path)])[0], 1 << 30)
    path.write_text('{"text": "a"}\n{"text": "b"\n')
    with pytest.raises(DataError, match="bad.jsonl line 2 is not valid JSON"):
        _segments(find_document_sources([str(path)])[0], 1 << 30)


def test_parquet_rows_by_row_group(tmp_path):
    path = tmp_path / "t.parquet"
    texts = [f"row {i}\n" * (i % 3) for i in range(50)]
    write_parquet(path, texts, row_group_size=8)
    source = find_document_sources([str(path)])[0]
    for target in (1, 1 << 30):
        segs = _segments(source, target)
        assert [s.text for s in segs] == [t for t in texts if t]
        assert [s.doc_key for s in segs][:2] == ["t.parquet#1", "t.parquet#2"]
    assert len(split_source(source, 1)) == 7  # one piece per row group at the smallest target
    assert sum(p.weight for p in split_source(source, 1)) == source.size
