"""Checkpoints round-trip exactly, are written atomically, and damaged ones give clear errors."""

import pytest
import torch

from multitoken import MTPModel, TrainConfig
from multitoken.data.tokenizer import ByteTokenizer
from multitoken.errors import CheckpointError
from multitoken.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint
from multitoken.training.checkpoint import save_checkpoint
from tests.conftest import tiny_model_config


def _save(out_dir, step, model, keep_last=3):
    cfg = TrainConfig(model=model.config, out_dir=str(out_dir))
    return save_checkpoint(out_dir, step, model, cfg, ByteTokenizer(), {"loop": {"step": step}}, {}, keep_last)


def test_round_trip_weights_config_and_outputs(tmp_path):
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(vocab_size=256, n_future=3))
    ckpt = _save(tmp_path, 7, model)
    assert ckpt.name == "step_000007"
    loaded, cfg, tokenizer = load_checkpoint(tmp_path)  # a run directory resolves to its newest checkpoint
    assert cfg.model == model.config and tokenizer.kind == "bytes"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    idx = torch.randint(0, 256, (2, 9))
    torch.testing.assert_close(loaded(idx, return_all_heads=True), model.eval()(idx, return_all_heads=True))


def test_tied_embeddings_are_stored_once_and_stay_tied(tmp_path):
    from safetensors.torch import load_file

    model = MTPModel(tiny_model_config(vocab_size=256, tie_embeddings=True))
    ckpt = _save(tmp_path, 1, model)
    assert "output.weight" not in load_file(ckpt / "model.safetensors")
    loaded, _, _ = load_checkpoint(ckpt)
    assert loaded.output.weight is loaded.tok_embeddings.weight
    assert torch.equal(loaded.output.weight, model.output.weight)


def test_keep_last_and_leftover_temporaries_are_ignored(tmp_path):
    model = MTPModel(tiny_model_config(vocab_size=256))
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, model, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000003", "step_000004"]
    # A save killed midway leaves a hidden temporary directory: it is never taken for a checkpoint.
    (tmp_path / "checkpoints" / ".step_000005.tmp-abc").mkdir()
    assert resolve_checkpoint(tmp_path).name == "step_000004"
    _save(tmp_path, 5, model, keep_last=2)
    assert not list((tmp_path / "checkpoints").glob(".step_*"))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        resolve_checkpoint(tmp_path)


def test_corrupt_weights(tmp_path):
    ckpt = _save(tmp_path, 1, MTPModel(tiny_model_config(vocab_size=256)))
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(ckpt)


def test_incomplete_and_mismatched_checkpoints(tmp_path):
    ckpt = _save(tmp_path, 1, MTPModel(tiny_model_config(vocab_size=256)))
    (ckpt / "config.yaml").write_text((ckpt / "config.yaml").read_text().replace("d_model: 32", "d_model: 64"))
    with pytest.raises(CheckpointError, match="does not describe the weights .*d_model 32 -> 64"):
        load_checkpoint(ckpt)
    (ckpt / "config.yaml").write_text("model: [unclosed")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)
    (ckpt / "tokenizer_config.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(ckpt)
