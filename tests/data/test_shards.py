"""Prepared data for training: shard slices equal the concatenation, and resolve_data hands train_batch its tokens."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from multitoken import DataConfig
from multitoken.data.batches import eval_batches, train_batch
from multitoken.data.prepare import PrepareOptions, prepare
from multitoken.data.shards import ShardedTokens, open_prepared
from multitoken.data.tokenizer import ByteTokenizer, build_tokenizer
from multitoken.data.tokens import resolve_data
from multitoken.errors import ConfigError, DataError
from tests.data.test_prepare import SMALL, expected_splits


def test_slices_across_shard_boundaries_equal_the_concatenation(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 60000, size=n, dtype=np.uint16) for n in (5, 1, 17, 3, 40)]
    for i, part in enumerate(parts):
        part.tofile(tmp_path / f"s{i}.bin")
    tokens = ShardedTokens([tmp_path / f"s{i}.bin" for i in range(5)], [p.size for p in parts], "uint16")
    whole = np.concatenate(parts)
    assert len(tokens) == whole.size and tokens.dtype == np.uint16
    for a in range(-3, whole.size + 2):
        for b in range(a - 1, whole.size + 3):
            got = tokens[a:b]
            assert isinstance(got, np.ndarray) and np.array_equal(got, whole[a:b]), (a, b)
    assert tokens[22] == whole[22] and tokens[-1] == whole[-1] and np.array_equal(np.asarray(tokens), whole)
    with pytest.raises(IndexError):
        tokens[whole.size]
    copy = pickle.loads(pickle.dumps(tokens))  # travels to other processes as paths, not as copied data
    assert len(pickle.dumps(tokens)) < 1000 and np.array_equal(copy[3:30], whole[3:30])


def test_resolve_data_on_a_prepared_folder_feeds_train_batch(mixed_corpus, tmp_path, bpe_dir):
    out = tmp_path / "out"
    prepare([str(mixed_corpus)], build_tokenizer(str(bpe_dir)), out, PrepareOptions(**SMALL))
    tokenizer, data = resolve_data(DataConfig(path=str(out)))
    assert tokenizer.kind == "bpe" and data.meta["prepared"] and data.meta["eot_id"] == 0
    assert data.meta["manifest"]["tokenizer"]["fingerprint"] == tokenizer.fingerprint
    batch = train_batch(data.train, batch_size=4, window=33, seed=0, step=3)
    assert batch.shape == (4, 33) and int(batch.max()) < tokenizer.vocab_size
    flat = np.asarray(data.train)
    rng = np.random.default_rng((0, 3, 0))
    starts = rng.integers(0, len(flat) - 33 + 1, size=4)
    assert np.array_equal(batch.numpy(), np.stack([flat[s:s + 33] for s in starts]))  # same windows as a flat array
    assert len(eval_batches(data.val, 2, 33, 3)) >= 1

    same, _ = resolve_data(DataConfig(path=str(out), tokenizer=str(bpe_dir)))  # naming the same tokenizer is fine
    assert same.fingerprint == tokenizer.fingerprint
    from multitoken.data.bpe import train_bpe

    other = tmp_path / "other"
    other.mkdir()
    train_bpe(iter(["something else entirely " * 30]), vocab_size=270).save(other)
    with pytest.raises(ConfigError, match="is not the tokenizer .* was prepared with"):
        resolve_data(DataConfig(path=str(out), tokenizer=str(other)))


def test_resolve_data_without_prepare_uses_the_cache_with_any_tokenizer(corpus, bpe_dir):
    tokenizer, data = resolve_data(DataConfig(path=str(corpus), tokenizer=str(bpe_dir), val_fraction=0.2))
    assert tokenizer.kind == "bpe" and data.meta["eot_id"] == 0 and data.train.dtype == np.uint16
    expected = expected_splits([str(corpus)], tokenizer, 0.2)
    assert np.asarray(data.train).tolist() == expected["train"] and np.asarray(data.val).tolist() == expected["val"]
    _, bytes_data = resolve_data(DataConfig(path=str(corpus), val_fraction=0.2))
    assert bytes_data.meta["eot_id"] == 0 and bytes_data.meta["directory"] != data.meta["directory"]


def test_damaged_prepared_folder_is_a_clear_error(mixed_corpus, tmp_path):
    out = tmp_path / "out"
    result = prepare([str(mixed_corpus)], ByteTokenizer(), out, PrepareOptions(**SMALL))
    (out / result.manifest["splits"]["val"]["shards"][0]["file"]).write_bytes(b"\0\0")
    with pytest.raises(DataError, match="is missing or truncated: rerun the same `multitoken prepare`"):
        open_prepared(out)
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match="manifest.json is missing"):
        open_prepared(out)


def test_several_prepared_folders_read_as_one_corpus(mixed_corpus, corpus, tmp_path, bpe_dir):
    bpe = build_tokenizer(str(bpe_dir))
    prepare([str(mixed_corpus)], bpe, tmp_path / "a", PrepareOptions(**SMALL))
    prepare([str(corpus)], bpe, tmp_path / "b", PrepareOptions(**SMALL))
    _, a = open_prepared(tmp_path / "a")
    _, b = open_prepared(tmp_path / "b")
    tokenizer, data = resolve_data(DataConfig(path=[str(tmp_path / "a"), str(tmp_path / "b")]))
    assert tokenizer.fingerprint == bpe.fingerprint and data.meta["tokens"]["train"] == len(a.train) + len(b.train)
    for split in ("train", "val"):
        whole = np.concatenate([np.asarray(getattr(a, split)), np.asarray(getattr(b, split))])
        assert np.array_equal(np.asarray(getattr(data, split)), whole)
    # A window across the join is read from both folders' shards.
    n = len(a.train)
    assert np.array_equal(data.train[n - 5:n + 5], np.concatenate([a.train[n - 5:], b.train[:5]]))

    prepare([str(corpus)], ByteTokenizer(), tmp_path / "bytes", PrepareOptions(**SMALL))
    with pytest.raises(ConfigError, match="bytes was prepared with another tokenizer .* must share one"):
        resolve_data(DataConfig(path=[str(tmp_path / "a"), str(tmp_path / "bytes")]))
    prepare([str(corpus)], bpe, tmp_path / "u32", PrepareOptions(dtype="uint32", **SMALL))
    with pytest.raises(ConfigError, match="holds uint32 tokens .* the same --dtype"):
        resolve_data(DataConfig(path=[str(tmp_path / "a"), str(tmp_path / "u32")]))
    with pytest.raises(ConfigError, match="mixes a prepared folder .* prepare the text first"):
        resolve_data(DataConfig(path=[str(tmp_path / "a"), str(corpus)]))
