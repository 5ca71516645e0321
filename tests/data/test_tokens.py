"""Token data: finding text, the one split rule (never an empty split), text prepared into the cache through
`prepare`, and the one reader verifying what it opens."""

import json
import os

import numpy as np
import pytest

from multitoken import DataConfig
from multitoken.data.corpus import default_corpus_root, is_validation
from multitoken.data.documents import default_corpus_sources, find_document_sources
from multitoken.data.shards import open_prepared
from multitoken.data.tokenizer import ByteTokenizer
from multitoken.data.tokens import BYTES_EOT, load_tokens
from multitoken.errors import DataError


@pytest.mark.slow
def test_default_corpus_is_this_pythons_stdlib():
    sources = default_corpus_sources()
    keys = {s.key for s in sources}
    assert len(sources) > 100 and "os.py" in keys and "json/decoder.py" in keys
    assert all(s.path.suffix == ".py" and "site-packages" not in s.path.parts for s in sources)
    assert all(s.path.is_relative_to(default_corpus_root()) for s in sources)


def test_folder_skips_binary_and_hidden_files(corpus):
    (corpus / ".git").mkdir()
    (corpus / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    keys = [s.key for s in find_document_sources([str(corpus)])]
    assert len(keys) == 12 and "blob.bin" not in keys and not any(k.startswith(".git") for k in keys)
    assert keys == sorted(keys)


def test_split_rule_is_deterministic_by_name():
    assert is_validation("a/b.py", 0.5) == is_validation("a/b.py", 0.5)
    share = np.mean([is_validation(f"f{i}.py", 0.1) for i in range(5000)])
    assert 0.08 < share < 0.12


def test_tokens_reproduce_the_files_exactly(corpus):
    data = load_tokens(DataConfig(path=[str(corpus)], val_fraction=0.2), ByteTokenizer())
    sources = find_document_sources([str(corpus)])
    side = lambda val: b"".join(s.path.read_bytes() + bytes([BYTES_EOT]) for s in sources  # noqa: E731
                                if is_validation(s.key, 0.2) == val)
    assert len(data.val) and bytes(np.asarray(data.train)) == side(False)
    assert bytes(np.asarray(data.val)) == side(True)
    assert data.meta["tokens"] == {"train": len(data.train), "val": len(data.val)}


def _name_in(split_val: bool, fraction: float) -> str:
    return next(f"doc{i}.txt" for i in range(10_000) if is_validation(f"doc{i}.txt", fraction) == split_val)


@pytest.mark.parametrize("hashes_to_validation", [False, True])
def test_a_single_file_never_leaves_a_split_empty(tmp_path, hashes_to_validation):
    """Whichever side the file's name hashes to, the other side gets the tail (or head) of its tokens."""
    path = tmp_path / _name_in(hashes_to_validation, 0.1)
    path.write_text("abcdefghij" * 100)
    data = load_tokens(DataConfig(path=str(path), val_fraction=0.1), ByteTokenizer())
    assert len(data.train) == 900 and len(data.val) == 101
    assert bytes(np.asarray(data.train)) + bytes(np.asarray(data.val)) == path.read_bytes() + b"\0"


def test_two_files_that_both_hash_to_train_still_give_a_validation_split(tmp_path):
    for i, name in enumerate(n for n in (f"f{j}.txt" for j in range(100)) if not is_validation(n, 0.001)):
        if i == 2:
            break
        (tmp_path / "two").mkdir(exist_ok=True)
        (tmp_path / "two" / name).write_text(f"file {i}\n" * 50)
    data = load_tokens(DataConfig(path=str(tmp_path / "two"), val_fraction=0.001), ByteTokenizer())
    assert len(data.train) > 0 and len(data.val) > 0


def test_cache_is_reused_refreshed_and_repaired(corpus):
    cfg = DataConfig(path=[str(corpus)])
    first = load_tokens(cfg, ByteTokenizer())
    before = bytes(np.asarray(first.train)) + bytes(np.asarray(first.val))
    folder = first.meta["directory"]
    assert load_tokens(cfg, ByteTokenizer()).meta["directory"] == folder
    # A shard cut short (a full disk, a crash of another tool): found on open, re-tokenized, the same tokens again.
    shard = sorted((p for p in (first.train.paths + first.val.paths)), key=lambda p: p.stat().st_size)[-1]
    with shard.open("r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    again = load_tokens(cfg, ByteTokenizer())
    assert bytes(np.asarray(again.train)) + bytes(np.asarray(again.val)) == before
    # A changed file is prepared again.
    (corpus / "pkg0" / "mod0.py").write_text("changed\n")
    changed = load_tokens(cfg, ByteTokenizer())
    assert b"changed\n\0" in bytes(np.asarray(changed.train)) + bytes(np.asarray(changed.val))


def test_token_ids_beyond_the_tokenizer_are_refused_on_read(corpus, tmp_path):
    from multitoken.data.prepare import prepare

    from multitoken.data.prepare import PrepareOptions

    out = tmp_path / "prepared"
    prepare([str(corpus)], ByteTokenizer(), out, PrepareOptions(dtype="uint16"))  # room for ids no byte has
    shard = out / json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"][0]["file"]
    raw = bytearray(shard.read_bytes())
    raw[10:12] = b"\xff\xff"  # one id becomes 65535
    shard.write_bytes(bytes(raw))
    _, data = open_prepared(out)
    with pytest.raises(DataError, match="holds token id 65535, but its tokenizer has 256 tokens"):
        data.train[0:10]


def test_a_manifest_cannot_point_outside_its_folder(corpus, tmp_path):
    from multitoken.data.prepare import prepare

    out = tmp_path / "prepared"
    prepare([str(corpus)], ByteTokenizer(), out)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0\0" * 100)
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("../secret.bin", str(secret)):
        manifest["splits"]["train"]["shards"][0] = {"file": name, "tokens": 100}
        (out / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(DataError, match="outside"):
            open_prepared(out)


def test_missing_odd_and_empty_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_document_sources([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no text, .jsonl or .parquet files found under"):
        find_document_sources([str(tmp_path / "empty")])
    os.mkfifo(tmp_path / "pipe")  # like /dev/zero: it exists, but is no file to train on
    with pytest.raises(DataError, match="is not a regular file or folder"):
        find_document_sources([str(tmp_path / "pipe")])
