"""The BPE tokenizer: training, exact round trips, saving and loading symmetrically, fingerprints, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from multitoken.data.tokenizer import EOT_TOKEN, BPETokenizer, ByteTokenizer, build_tokenizer, load_tokenizer
from multitoken.errors import ConfigError
from tests.data.conftest import lines

pytest.importorskip("tokenizers")


def test_trained_bpe_round_trips_text_exactly(bpe_dir):
    tok = build_tokenizer(str(bpe_dir))
    assert tok.kind == "bpe" and tok.vocab_size == 300 and tok.dtype == np.uint16
    assert tok.eot_id == 0 and tok.decode([tok.eot_id]) == EOT_TOKEN
    text = "\n".join(lines(1234, 50)) + "\n  mixed ünïcödé 😀 and unseen words: zyzzyva qwxj\r\n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned
    assert [a.tolist() for a in tok.encode_batch([text, text.encode()])] == [ids, ids]


def test_eot_in_document_text_is_plain_text(bpe_dir):
    tok = build_tokenizer(str(bpe_dir))
    ids = tok.encode(f"a {EOT_TOKEN} b")
    assert tok.eot_id not in ids and tok.decode(ids) == f"a {EOT_TOKEN} b"


def test_save_and_load_are_symmetric(bpe_dir, tmp_path):
    tok = build_tokenizer(str(bpe_dir))
    tok.save(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["kind"] == "bpe"
    for loaded in (load_tokenizer(tmp_path), build_tokenizer(str(tmp_path / "tokenizer.json")),
                   build_tokenizer(str(tmp_path))):
        assert isinstance(loaded, BPETokenizer) and loaded.fingerprint == tok.fingerprint
        assert loaded.encode("def f(x): return x") == tok.encode("def f(x): return x")
    ByteTokenizer().save(tmp_path)  # a bytes tokenizer folder loads as bytes
    assert load_tokenizer(tmp_path).kind == "bytes"


def test_fingerprints_tell_tokenizers_apart(bpe_dir):
    from multitoken.data.bpe import train_bpe

    other = train_bpe(iter(["completely different text " * 40]), vocab_size=280)
    assert build_tokenizer(str(bpe_dir)).fingerprint != other.fingerprint
    assert ByteTokenizer().fingerprint == "bytes" and ByteTokenizer().eot_id == 0


def test_foreign_tokenizer_needs_an_end_of_text_token(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "</s>": 2}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ConfigError, match="has no '<|endoftext|>' token.*eot_token"):
        build_tokenizer(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    foreign = build_tokenizer(str(tmp_path))
    assert foreign.eot_id == 2 and foreign.vocab_size == 3
    foreign.save(tmp_path)
    assert load_tokenizer(tmp_path).eot_id == 2  # the explicit eot survives a save/load round trip


def test_bad_tokenizer_specs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown tokenizer 'gpt9'"):
        build_tokenizer("gpt9")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not a valid tokenizer.json"):
        build_tokenizer(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no tokenizer.json"):
        build_tokenizer(str(tmp_path / "empty"))


def test_vocab_size_below_the_byte_alphabet_is_an_error():
    from multitoken.data.bpe import train_bpe

    with pytest.raises(ConfigError, match="--vocab-size must be at least 257"):
        train_bpe(iter(["x"]), vocab_size=200)
