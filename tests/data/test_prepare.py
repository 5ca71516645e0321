"""`prepare`: the shards hold exactly the documents' tokens, for any worker count, and reruns only do missing work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from multitoken.data.corpus import is_validation
from multitoken.data.documents import find_document_sources
from multitoken.data.prepare import PrepareOptions, prepare
from multitoken.data.shards import open_prepared
from multitoken.data.tokenizer import ByteTokenizer, build_tokenizer
from multitoken.errors import ConfigError, DataError

SMALL = dict(unit_bytes=2048, shard_tokens=700, val_fraction=0.3)  # many units, several parts, both splits used


def direct_documents(paths: list[str], field: str = "text") -> list[tuple[str, str | bytes]]:
    """(document name, text) in corpus order, read the plain way: whole files, lines, rows."""
    docs = []
    for source in find_document_sources(paths):
        if source.kind == "text":
            docs.append((source.key, source.path.read_bytes()))
        elif source.kind == "jsonl":
            offset = 0
            for line in source.path.read_bytes().splitlines(keepends=True):
                if line.strip():
                    docs.append((f"{source.key}@{offset}", json.loads(line)[field]))
                offset += len(line)
        else:
            import pyarrow.parquet as pq

            docs += [(f"{source.key}#{i}", t) for i, t in enumerate(pq.read_table(source.path)["text"].to_pylist())]
    return [(key, text) for key, text in docs if text]


def expected_splits(paths, tokenizer, val_fraction) -> dict[str, list[int]]:
    out = {"train": [], "val": []}
    for key, text in direct_documents(paths):
        ids = list(text) if isinstance(text, bytes) and tokenizer.kind == "bytes" else tokenizer.encode(
            text.decode() if isinstance(text, bytes) else text)
        out["val" if is_validation(key, val_fraction) else "train"] += ids + [tokenizer.eot_id]
    return out


def _tokenizer(kind, bpe_dir):
    return ByteTokenizer() if kind == "bytes" else build_tokenizer(str(bpe_dir))


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_shards_hold_each_documents_tokens(mixed_corpus, tmp_path, bpe_dir, kind):
    tokenizer = _tokenizer(kind, bpe_dir)
    result = prepare([str(mixed_corpus)], tokenizer, tmp_path / "out", PrepareOptions(**SMALL))
    expected = expected_splits([str(mixed_corpus)], tokenizer, 0.3)
    got_tokenizer, data = open_prepared(tmp_path / "out")
    assert got_tokenizer.fingerprint == tokenizer.fingerprint
    assert np.asarray(data.train).tolist() == expected["train"] and np.asarray(data.val).tolist() == expected["val"]
    m = result.manifest
    width = np.uint8 if kind == "bytes" else np.uint16  # the narrowest type that holds every id
    assert result.units > 5 and m["dtype"] == np.dtype(width).name and data.train.dtype == width
    assert max(s["tokens"] for s in m["splits"]["train"]["shards"]) <= 700
    n_docs = len(direct_documents([str(mixed_corpus)]))
    assert m["splits"]["train"]["documents"] + m["splits"]["val"]["documents"] == n_docs
    assert sum(s["documents"] for s in m["sources"]) == n_docs
    assert sum(s["tokens"] for s in m["sources"]) == len(data.train) + len(data.val)
    assert {s["kind"] for s in m["sources"]} == {"text", "jsonl", "parquet"}


def _snapshot(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.bin"))}


def test_worker_count_does_not_change_the_output(mixed_corpus, tmp_path, bpe_dir):
    tokenizer = _tokenizer("bpe", bpe_dir)
    one = prepare([str(mixed_corpus)], tokenizer, tmp_path / "w1", PrepareOptions(workers=1, **SMALL))
    two = prepare([str(mixed_corpus)], tokenizer, tmp_path / "w2", PrepareOptions(workers=2, **SMALL))
    assert one.manifest == two.manifest
    assert _snapshot(tmp_path / "w1") == _snapshot(tmp_path / "w2")


def _mtimes(out):
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_rerun_is_a_no_op_and_a_lost_shard_is_redone_alone(mixed_corpus, tmp_path):
    out, options = tmp_path / "out", PrepareOptions(**SMALL)
    first = prepare([str(mixed_corpus)], ByteTokenizer(), out, options)
    before, contents = _mtimes(out), _snapshot(out)
    again = prepare([str(mixed_corpus)], ByteTokenizer(), out, options)
    assert again.up_to_date and _mtimes(out) == before  # not one file rewritten

    lost = first.manifest["splits"]["train"]["shards"][3]["file"]
    (out / lost).unlink()
    resumed = prepare([str(mixed_corpus)], ByteTokenizer(), out, options)
    assert not resumed.up_to_date and resumed.units_reused == first.units - 1
    assert _snapshot(out) == contents and resumed.manifest == first.manifest
    after = _mtimes(out)
    unit = lost.split("_")[1]
    rewritten = {f for f in before if after.get(f) != before[f]}
    assert rewritten and all(f"_{unit}_" in f or f.endswith(f"{unit}.json") or f == "manifest.json" for f in rewritten)


def test_failed_run_keeps_finished_units_for_the_next(mixed_corpus, tmp_path):
    bad = mixed_corpus / "zz_bad.jsonl"  # sorted last: the units before it finish first
    bad.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"zz_bad.jsonl line 2 has no 'text' field"):
        prepare([str(mixed_corpus)], ByteTokenizer(), out, PrepareOptions(**SMALL))
    finished = _mtimes(out)
    assert not (out / "manifest.json").exists() and any(f.endswith(".bin") for f in finished)
    assert not any(".tmp-" in f for f in finished)
    bad.write_text('{"text": "fine"}\n{"text": "fixed"}\n')
    result = prepare([str(mixed_corpus)], ByteTokenizer(), out, PrepareOptions(**SMALL))
    assert result.units_reused == result.units - 1  # only the unit holding the bad file is redone
    after = _mtimes(out)
    assert all(after[f] == t for f, t in finished.items() if f.endswith(".bin"))


def test_dtype_choice(mixed_corpus, tmp_path):
    result = prepare([str(mixed_corpus)], ByteTokenizer(), tmp_path / "u32", PrepareOptions(dtype="uint32", **SMALL))
    _, data = open_prepared(tmp_path / "u32")
    assert result.manifest["dtype"] == "uint32" and data.train.dtype == np.uint32
    assert np.asarray(data.train).tolist() == expected_splits([str(mixed_corpus)], ByteTokenizer(), 0.3)["train"]

    class Huge(ByteTokenizer):
        vocab_size = 70_000

    with pytest.raises(ConfigError, match="--dtype uint16 cannot hold token ids up to 69999"):
        prepare([str(mixed_corpus)], Huge(), tmp_path / "x", PrepareOptions(dtype="uint16"))
    assert not (tmp_path / "x").exists()


def test_output_folder_must_be_ours_and_match_the_tokenizer(mixed_corpus, tmp_path, bpe_dir):
    prepare([str(mixed_corpus)], ByteTokenizer(), tmp_path / "out", PrepareOptions(**SMALL))
    with pytest.raises(DataError, match="prepared with a different tokenizer"):
        prepare([str(mixed_corpus)], build_tokenizer(str(bpe_dir)), tmp_path / "out", PrepareOptions(**SMALL))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(DataError, match="is not empty and holds no prepared data"):
        prepare([str(mixed_corpus)], ByteTokenizer(), tmp_path / "mine", PrepareOptions())


def test_output_inside_the_data_folder_and_repeated_paths(mixed_corpus):
    out = mixed_corpus / "prepared"
    first = prepare([str(mixed_corpus), str(mixed_corpus / "rows.jsonl")], ByteTokenizer(), out, PrepareOptions(**SMALL))
    keys = [s["key"] for s in first.manifest["sources"]]
    assert not any(k.startswith("prepared/") for k in keys) and keys.count("rows.jsonl") == 1
    assert prepare([str(mixed_corpus)], ByteTokenizer(), out, PrepareOptions(**SMALL)).up_to_date


def test_manifest_names_sources_by_absolute_path(mixed_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(mixed_corpus.parent)
    manifest = prepare([mixed_corpus.name], ByteTokenizer(), tmp_path / "out", PrepareOptions(**SMALL)).manifest
    assert all(Path(s["path"]).is_absolute() and Path(s["path"]).is_file() for s in manifest["sources"])
    assert sum(s["documents"] for s in manifest["sources"]) == len(direct_documents([str(mixed_corpus)]))
