"""`multitoken tokenizer train`: writes a usable tokenizer folder and refuses to overwrite one."""

from __future__ import annotations

import json

from multitoken.data.tokenizer import build_tokenizer
from tests.cli.conftest import assert_one_line_error, run_cli


def test_tokenizer_train_writes_a_tokenizer(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    code, stdout, _ = run_cli(capsys, "tokenizer", "train", "--data", corpus, "--vocab-size", 280, "--out", out,
                              "--min-frequency", 1)
    assert code == 0 and stdout.startswith("trained byte-level BPE: 280 tokens from") and len(stdout.splitlines()) == 1
    assert "kB (12 documents)" in stdout
    assert json.loads((out / "tokenizer_config.json").read_text())["kind"] == "bpe"
    tok = build_tokenizer(str(out))
    text = (corpus / "pkg0" / "mod0.py").read_text()
    assert tok.decode(tok.encode(text)) == text and tok.eot_id == 0

    code, _, err = run_cli(capsys, "tokenizer", "train", "--data", corpus, "--vocab-size", 320, "--out", out)
    assert_one_line_error(code, err, "already holds a tokenizer.json")
    code, _, err = run_cli(capsys, "tokenizer", "train", "--data", corpus, "--vocab-size", 100, "--out", tmp_path / "x")
    assert_one_line_error(code, err, "--vocab-size must be at least 257")
    code, _, err = run_cli(capsys, "tokenizer", "train", "--data", tmp_path / "nope", "--vocab-size", 300,
                           "--out", tmp_path / "x")
    assert_one_line_error(code, err, "does not exist")
