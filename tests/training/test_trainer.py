"""The training loop learns, logs, refuses to clobber a run, and resumes exactly."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from multitoken.errors import CheckpointError
from multitoken.checkpoint import list_checkpoints
from multitoken.training.trainer import Trainer, train
from tests.conftest import tiny_model_config, tiny_train_config


def _weights(ckpt):
    return load_file(ckpt / "model.safetensors")


def test_training_reduces_loss_and_writes_metrics(corpus, tmp_path):
    cfg = tiny_train_config(corpus, tmp_path / "run", max_steps=40, eval_interval=20, save_interval=20)
    first_val = Trainer(cfg).validate()["loss"]
    shutil.rmtree(tmp_path / "run")
    result = train(cfg)
    assert result["step"] == 40
    assert all(after < before - 0.5 for after, before in zip(result["val"]["loss"], first_val))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == list(range(2, 41, 2))
    assert all(len(r["loss"]) == 2 and r["tokens_per_s"] > 0 for r in train_records)
    assert [r["step"] for r in records if r["split"] == "val"] == [20, 40]
    assert (tmp_path / "run" / "config.yaml").exists()


VARIANTS = {"plain": {},  # and an imported model's features: tied embeddings, wide heads, windows below the context
            "tied-headdim-seqlen": dict(model=tiny_model_config(vocab_size=256, n_future=2, tie_embeddings=True,
                                                                head_dim=16, rope_scaling={"rope_type": "linear",
                                                                                           "factor": 2.0}),
                                        seq_len=16)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_equals_uninterrupted_run(corpus, tmp_path, variant):
    extra = VARIANTS[variant]
    straight = tiny_train_config(corpus, tmp_path / "straight", max_steps=8, save_interval=4, eval_interval=4, **extra)
    train(straight)
    # Simulate a run killed after its step-4 checkpoint: copy the run, drop everything after step 4, resume.
    shutil.copytree(tmp_path / "straight", tmp_path / "killed")
    shutil.rmtree(tmp_path / "killed" / "checkpoints" / "step_000008")
    resumed = tiny_train_config(corpus, tmp_path / "killed", max_steps=8, save_interval=4, eval_interval=4,
                                resume=True, **extra)
    result = train(resumed)
    assert result["step"] == 8
    a = _weights(list_checkpoints(tmp_path / "straight")[-1])
    b = _weights(list_checkpoints(tmp_path / "killed")[-1])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The metrics log of the resumed run holds each step once, as the straight run's does.
    steps = lambda run: [json.loads(x)["step"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert steps("killed") == steps("straight")


def test_existing_run_is_never_overwritten(corpus, tmp_path):
    cfg = tiny_train_config(corpus, tmp_path / "run", max_steps=3)
    train(cfg)
    with pytest.raises(CheckpointError, match="--resume"):
        train(cfg)


def test_resume_with_a_different_model_is_refused(corpus, tmp_path):
    cfg = tiny_train_config(corpus, tmp_path / "run", max_steps=3)
    train(cfg)
    changed = tiny_train_config(corpus, tmp_path / "run", max_steps=6, resume=True)
    changed.model.d_model = 64
    with pytest.raises(CheckpointError, match="d_model 32 -> 64"):
        train(changed)


def test_gradient_accumulation_and_naive_strategy_train_end_to_end(corpus, tmp_path):
    cfg = tiny_train_config(corpus, tmp_path / "accum", max_steps=3, batch_size=2, grad_accum_steps=2,
                            loss_strategy="naive")
    result = train(cfg)
    assert result["step"] == 3 and all(torch.isfinite(torch.tensor(result["val"]["loss"])))


def test_seq_len_beyond_the_context_is_refused(corpus, tmp_path):
    from multitoken.errors import ConfigError

    with pytest.raises(ConfigError, match="exceeds the model's context of 32"):
        Trainer(tiny_train_config(corpus, tmp_path / "run", seq_len=64))
