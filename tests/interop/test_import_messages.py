"""Importing models that are unusual but workable, or broken: each either converts (the way transformers would read
it) or is refused in one line that points at the real problem, with nothing written."""

import json
import shutil

import pytest
import torch

from multitoken.checkpoint import load_checkpoint
from multitoken.errors import CheckpointError, ConfigError
from multitoken.interop.convert import convert
from tests.interop.conftest import make_hf_model

gguf = pytest.importorskip("gguf")

from tests.interop.test_gguf import byte_level_bpe, make_gguf, write_gguf  # noqa: E402


@pytest.fixture(scope="module")
def bpe():
    return byte_level_bpe(320)


def test_a_gguf_without_tokenizer_metadata_takes_one_from_tokenizer(tmp_path, bpe):
    from tests.interop.conftest import make_hf_model

    model = make_hf_model(tmp_path / "hf", vocab_size=bpe.get_vocab_size(), num_key_value_heads=2)
    bare = tmp_path / "bare.gguf"
    write_gguf(bare, model, bpe, "F32", tied=False, with_tokenizer=False)
    with pytest.raises(CheckpointError, match="carries no tokenizer .*pass --tokenizer"):
        convert(bare, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    bpe.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    convert(bare, tmp_path / "out", tokenizer=str(tmp_path))  # the vocabulary's size from the embedding's rows
    converted = load_checkpoint(tmp_path / "out")[0]
    assert converted.config.vocab_size == bpe.get_vocab_size()


def test_a_gguf_is_known_by_its_bytes_and_a_folder_holding_one_is_named(tmp_path, bpe):
    path = make_gguf(tmp_path / "src", bpe)
    renamed = tmp_path / "model.bin"
    shutil.copy(path, renamed)
    convert(renamed, tmp_path / "out")
    assert load_checkpoint(tmp_path / "out")[0].config.vocab_size == bpe.get_vocab_size()
    holder = tmp_path / "holder"
    holder.mkdir()
    shutil.copy(path, holder / "weights.gguf")
    with pytest.raises(CheckpointError, match="folder holding the GGUF file weights.gguf: point at the .gguf file"):
        convert(holder, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_non_finite_weights_are_refused_and_nothing_is_written(tmp_path, bpe):
    model = make_hf_model(tmp_path / "hf", vocab_size=bpe.get_vocab_size(), num_key_value_heads=2)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
    path = tmp_path / "nan.gguf"
    write_gguf(path, model, bpe, "F32", tied=False)
    with pytest.raises(CheckpointError, match="blk.1.ffn_up.weight|layers.1.feed_forward") as info:
        convert(path, tmp_path / "out")
    assert "NaN or infinity in the source" in str(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_a_config_without_architectures_goes_by_model_type(tmp_path):
    make_hf_model(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config.pop("architectures")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    convert(tmp_path / "hf", tmp_path / "out")  # transformers reads model_type "llama" as LlamaForCausalLM
    config.pop("model_type")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="names no architecture .*\"architectures\": \\[\"LlamaForCausalLM\"\\]"):
        convert(tmp_path / "hf", tmp_path / "out2")


def test_end_of_text_from_generation_config_as_transformers_takes_it(tmp_path):
    folder = tmp_path / "hf"
    make_hf_model(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))  # no eos_token
    config = json.loads((folder / "config.json").read_text())
    config.pop("eos_token_id")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 3]}))
    convert(folder, tmp_path / "out")
    tokenizer = load_checkpoint(tmp_path / "out")[2]
    assert tokenizer.eot_id == 2 and 3 in tokenizer.stop_ids


def test_distill_and_serve_take_the_same_roles(tmp_path):
    from multitoken.data.chat import ROLES
    from multitoken.data.prompts import read_prompts
    from multitoken.serve.requests import Message

    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "tool", "content": "42"}, {"role": "user", "content": "hi"}]})
                    + "\n")
    with pytest.raises(ConfigError, match="role 'tool' is not one of system, user, assistant"):
        read_prompts(path)
    for role in ROLES:
        assert Message(role=role, content="x").role == role
    with pytest.raises(ValueError):
        Message(role="tool", content="x")
