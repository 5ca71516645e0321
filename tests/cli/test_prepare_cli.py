"""`multitoken prepare` end to end: summary, no-op rerun, training on the result, and one-line errors that leave
finished shards alone."""

from __future__ import annotations

import os

import pytest

from tests.cli.conftest import assert_one_line_error, run_cli
from tests.data.conftest import write_parquet


@pytest.fixture
def prepared(corpus, tmp_path, capsys):
    out = tmp_path / "prepared"
    code, stdout, _ = run_cli(capsys, "prepare", "--data", corpus, "--out", out, "--workers", 2, "--val-fraction", 0.2)
    assert code == 0 and "prepared" in stdout and "train" in stdout and "uint8" in stdout, stdout  # bytes: 1 byte per id
    return out


def _shards(out):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("shard_*.bin"))}


def test_prepare_then_rerun_is_up_to_date(prepared, corpus, capsys):
    before = _shards(prepared)
    code, out, _ = run_cli(capsys, "prepare", "--data", corpus, "--out", prepared, "--val_fraction", 0.2)
    assert code == 0 and "is up to date" in out and "nothing to do" in out
    assert _shards(prepared) == before


def test_prepared_folder_opens_for_training(prepared):
    from multitoken import DataConfig
    from multitoken.data.tokens import resolve_data

    tokenizer, data = resolve_data(DataConfig(path=str(prepared)))
    assert data.meta["prepared"] and len(data.train) > 1000 and tokenizer.kind == "bytes"


def test_jsonl_errors_name_file_and_line_and_keep_shards(prepared, corpus, capsys):
    before = _shards(prepared)
    bad = corpus / "zz.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    code, _, err = run_cli(capsys, "prepare", "--data", corpus, "--out", prepared, "--val-fraction", 0.2,
                           "--workers", 2)
    assert_one_line_error(code, err, "zz.jsonl line 2 has no 'text' field", "--jsonl-field")
    bad.write_text('{"text": "ok"}\n{"text": "broken\n')
    code, _, err = run_cli(capsys, "prepare", "--data", corpus, "--out", prepared, "--val-fraction", 0.2)
    assert_one_line_error(code, err, "zz.jsonl line 2 is not valid JSON")
    assert _shards(prepared) == before


def test_parquet_and_unreadable_inputs(prepared, corpus, tmp_path, capsys):
    before = _shards(prepared)
    table = tmp_path / "t.parquet"
    write_parquet(table, ["a", "b"], column="content")
    code, _, err = run_cli(capsys, "prepare", "--data", corpus, table, "--out", prepared)
    assert_one_line_error(code, err, "has no column 'text'", "columns: content, n", "--parquet-column")
    table.write_bytes(b"PAR1 this is not parquet")
    code, _, err = run_cli(capsys, "prepare", "--data", corpus, table, "--out", prepared)
    assert_one_line_error(code, err, "cannot read", "t.parquet")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.txt"
        locked.write_text("secret")
        locked.chmod(0)
        code, _, err = run_cli(capsys, "prepare", "--data", locked, "--out", tmp_path / "o")
        assert_one_line_error(code, err, "cannot read", "locked.txt")
    assert _shards(prepared) == before


def test_tokenizer_and_dtype_mismatches(prepared, corpus, tmp_path, capsys):
    before = _shards(prepared)
    tok = tmp_path / "tok"
    assert run_cli(capsys, "tokenizer", "train", "--data", corpus, "--vocab-size", 300, "--out", tok)[0] == 0
    code, _, err = run_cli(capsys, "prepare", "--data", corpus, "--tokenizer", tok, "--out", prepared)
    assert_one_line_error(code, err, "holds data prepared with a different tokenizer", "choose another --out")

    from tokenizers import Tokenizer, models

    big = tmp_path / "big"  # a 70k vocabulary: ids past uint16
    big.mkdir()
    vocab = {"<|endoftext|>": 0, **{f"t{i}": i for i in range(1, 70_000)}}
    Tokenizer(models.BPE(vocab=vocab, merges=[])).save(str(big / "tokenizer.json"))
    code, _, err = run_cli(capsys, "prepare", "--data", corpus, "--tokenizer", big, "--out", tmp_path / "o",
                           "--dtype", "uint16")
    assert_one_line_error(code, err, "--dtype uint16 cannot hold token ids up to 69999", "uint32")
    assert _shards(prepared) == before
