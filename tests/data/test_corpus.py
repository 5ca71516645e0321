"""Finding text, splitting by file deterministically, and the token cache."""

import numpy as np
import pytest

from multitoken import DataConfig
from multitoken.data.corpus import default_corpus_root, find_sources, is_validation, split_sources
from multitoken.data.tokenizer import ByteTokenizer
from multitoken.data.tokens import BYTES_EOT, load_tokens
from multitoken.errors import DataError


def test_default_corpus_is_this_pythons_stdlib():
    sources = find_sources(None)
    keys = {s.key for s in sources}
    assert len(sources) > 100 and "os.py" in keys and "json/decoder.py" in keys
    assert all(s.path.suffix == ".py" and "site-packages" not in s.path.parts for s in sources)
    assert all(s.path.is_relative_to(default_corpus_root()) for s in sources)


def test_folder_skips_binary_and_hidden_files(corpus):
    (corpus / ".git").mkdir()
    (corpus / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    keys = [s.key for s in find_sources([str(corpus)])]
    assert len(keys) == 12 and "blob.bin" not in keys and not any(k.startswith(".git") for k in keys)
    assert keys == sorted(keys)


def test_split_is_by_file_deterministic_and_never_empty(corpus):
    sources = find_sources([str(corpus)])
    train, val = split_sources(sources, 0.2)
    assert train and val and not {s.key for s in train} & {s.key for s in val}
    assert {s.key for s in split_sources(list(reversed(sources)), 0.2)[1]} == {s.key for s in val}  # order-free
    # The decision for a file depends on its relative path alone.
    assert is_validation("a/b.py", 0.5) == is_validation("a/b.py", 0.5)
    share = np.mean([is_validation(f"f{i}.py", 0.1) for i in range(5000)])
    assert 0.08 < share < 0.12
    tiny_train, tiny_val = split_sources(sources[:2], 0.001)
    assert len(tiny_train) == 1 and len(tiny_val) == 1


def test_tokens_reproduce_the_files_exactly(corpus):
    data = load_tokens(DataConfig(path=[str(corpus)], val_fraction=0.2), ByteTokenizer())
    train_files, val_files = split_sources(find_sources([str(corpus)]), 0.2)
    expected = b"".join(s.read() + bytes([BYTES_EOT]) for s in train_files)
    assert bytes(np.asarray(data.train)) == expected
    assert bytes(np.asarray(data.val)) == b"".join(s.read() + bytes([BYTES_EOT]) for s in val_files)
    assert data.meta["tokens"] == {"train": len(data.train), "val": len(data.val)}


def test_cache_is_reused_and_refreshed_when_a_file_changes(corpus):
    cfg = DataConfig(path=[str(corpus)])
    first = load_tokens(cfg, ByteTokenizer())
    assert load_tokens(cfg, ByteTokenizer()).meta["cache"] == first.meta["cache"]
    (corpus / "pkg0" / "mod0.py").write_text("changed\n")
    assert load_tokens(cfg, ByteTokenizer()).meta["cache"] != first.meta["cache"]


def test_single_file_holds_out_its_tail(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("abcdefghij" * 100)
    data = load_tokens(DataConfig(path=str(path), val_fraction=0.1), ByteTokenizer())
    assert len(data.val) > 0 and bytes(np.asarray(data.train)) + bytes(np.asarray(data.val)) == path.read_bytes() + b"\0"


def test_missing_and_empty_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_sources([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no text files found under"):
        find_sources([str(tmp_path / "empty")])
