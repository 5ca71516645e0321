"""Awkward inputs `prepare` must survive: long JSONL lines across unit cuts, lone surrogates, odd file names, and a
run that stopped between its last unit and its manifest."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from multitoken.config import DataConfig
from multitoken.data.prepare import PrepareOptions, prepare
from multitoken.data.shards import open_prepared
from multitoken.data.tokenizer import ByteTokenizer
from multitoken.data.tokens import resolve_data
from multitoken.errors import DataError


def _all_tokens(out) -> np.ndarray:
    _, data = open_prepared(out)
    return np.concatenate([np.asarray(data.train), np.asarray(data.val)])


def _text(tokens: np.ndarray) -> str:
    return tokens.astype(np.uint8).tobytes().decode()  # byte-level ids, stored as uint16 by prepare


def test_a_jsonl_line_longer_than_the_cut_window_is_never_split(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    texts = ["short one", "y" * (2 << 20), "after the long line"]  # the long line crosses several unit boundaries
    (data / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    prepare([str(data)], ByteTokenizer(), tmp_path / "out", PrepareOptions(unit_bytes=1 << 20, val_fraction=0.01))
    tokens = _all_tokens(tmp_path / "out")
    assert sorted(_text(d) for d in np.split(tokens, np.flatnonzero(tokens == 0) + 1) if len(d) > 1) == \
        sorted(t + "\0" for t in texts)


def test_lone_surrogates_in_jsonl_become_replacement_characters(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text('{"text": "hello \\ud83d world"}\n')
    prepare([str(data)], ByteTokenizer(), tmp_path / "out", PrepareOptions(val_fraction=0.01))
    assert _text(_all_tokens(tmp_path / "out")) == "hello \ufffd world\0"


def test_file_names_that_are_not_utf8(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    (data / os.fsdecode(b"caf\xe9.txt")).write_text("text in a file with a Latin-1 name\n")
    prepare([str(data)], ByteTokenizer(), tmp_path / "out", PrepareOptions(val_fraction=0.01))
    assert _text(_all_tokens(tmp_path / "out")) == "text in a file with a Latin-1 name\n\0"


def test_a_run_stopped_before_its_manifest_is_finished_by_the_rerun_and_never_read_as_text(mixed_corpus, tmp_path):
    options = PrepareOptions(unit_bytes=2048, workers=2, val_fraction=0.3)
    prepare([str(mixed_corpus)], ByteTokenizer(), tmp_path / "out", options)
    before = _all_tokens(tmp_path / "out")
    (tmp_path / "out" / "manifest.json").unlink()
    with pytest.raises(DataError, match="did not finish"):
        resolve_data(DataConfig(path=[str(tmp_path / "out")]))
    prepare([str(mixed_corpus)], ByteTokenizer(), tmp_path / "out", options)  # every unit done: only the manifest
    assert np.array_equal(_all_tokens(tmp_path / "out"), before)
