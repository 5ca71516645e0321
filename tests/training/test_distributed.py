"""Distributed training equals single-process training: 2 CPU processes on gloo, DDP and FSDP2.

Each case spawns real worker processes that run the ordinary Trainer as torchrun would (RANK, WORLD_SIZE and
LOCAL_RANK in the environment). Rank r reads rows r*B..(r+1)*B-1 of the global batch, so two ranks with batch_size B
must reproduce one process with batch_size 2B, to fp32 tolerance (reduction order differs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from multitoken.config import TrainConfig, from_dict, to_dict
from multitoken.checkpoint import list_checkpoints
from multitoken.training.trainer import Trainer, train
from tests.conftest import tiny_train_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")]

B = 2  # per-rank batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_dict: dict, out: str, cache: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), MULTITOKEN_CACHE=cache)
    torch.set_num_threads(1)
    counts = {"ddp_buckets": 0, "fsdp_reduce_scatters": 0, "steps": 0}
    # FSDP2 reduces gradients with dist.reduce_scatter_single (looked up at call time): count the calls.
    original = dist.reduce_scatter_single

    def counting_reduce_scatter(*args, **kwargs):
        counts["fsdp_reduce_scatters"] += 1
        return original(*args, **kwargs)

    dist.reduce_scatter_single = counting_reduce_scatter
    try:
        trainer = Trainer(from_dict(TrainConfig, cfg_dict))
        if trainer.parallel == "ddp":
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            def counting_hook(state, bucket):
                counts["ddp_buckets"] += 1
                return allreduce_hook(state, bucket)

            trainer.wrapped.register_comm_hook(None, counting_hook)
        counts["steps"] = trainer.cfg.max_steps - trainer.state.step
        counts["groups"] = 1 + sum(1 for layer in trainer.model.layers[:-1]
                                   if any(p.requires_grad for p in layer.parameters()))
        trainer.fit()
    finally:
        dist.reduce_scatter_single = original
        from multitoken.training.distributed import shutdown_distributed

        shutdown_distributed()
    torch.save(counts, Path(out) / f"counts_rank{rank}.pt")


def _spawn(cfg: TrainConfig, tmp_path: Path, world: int = 2) -> dict:
    out = tmp_path / f"spawn_{_free_port()}"
    out.mkdir()
    mp.spawn(_worker, args=(world, _free_port(), to_dict(cfg), str(out), os.environ["MULTITOKEN_CACHE"]),
             nprocs=world, join=True)
    return torch.load(out / "counts_rank0.pt", weights_only=True)


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(list_checkpoints(run)[-1] / "model.safetensors")


def _train_losses(run: Path) -> list[list[float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=2e-4, atol=2e-5, msg=key)


def _config(corpus, out, **overrides) -> TrainConfig:
    values = dict(max_steps=3, grad_accum_steps=2, log_interval=1, eval_interval=3, save_interval=3)
    values.update(overrides)
    return tiny_train_config(corpus, out, **values)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_equal_one_with_the_same_global_batch(corpus, tmp_path, mode):
    single = _config(corpus, tmp_path / "single", batch_size=2 * B)
    train(single)
    counts = _spawn(_config(corpus, tmp_path / mode, batch_size=B, parallel=mode), tmp_path)
    _assert_close(_final_weights(tmp_path / "single"), _final_weights(tmp_path / mode))
    torch.testing.assert_close(torch.tensor(_train_losses(tmp_path / mode)),
                               torch.tensor(_train_losses(tmp_path / "single")), rtol=1e-4, atol=1e-5)
    # Gradients cross the wire once per optimizer step: not once per head (n_future = 2 here, and the head loop runs
    # a backward per head) and not once per micro-step (grad_accum_steps = 2).
    if mode == "ddp":
        assert counts["ddp_buckets"] == counts["steps"] == 3  # the tiny model fits DDP's first 1 MB bucket
    else:
        assert counts["fsdp_reduce_scatters"] == counts["steps"] * counts["groups"]  # one per group per step


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_frozen_trunk_trains_heads_only(corpus, tmp_path, mode):
    cfg = _config(corpus, tmp_path / "frozen", batch_size=B, parallel=mode, freeze="trunk", grad_accum_steps=1)
    init = Trainer(dataclasses.replace(cfg, parallel="none", out_dir=str(tmp_path / "init"))).model.state_dict()
    counts = _spawn(cfg, tmp_path)
    after = _final_weights(tmp_path / "frozen")
    trunk = [k for k in after if k.startswith("tok_embeddings") or k.startswith(("layers.0.", "layers.1."))]
    assert trunk and all(torch.equal(after[k], init[k]) for k in trunk)
    assert not torch.equal(after["extra_heads.0.attention.wq.weight"], init["extra_heads.0.attention.wq.weight"])
    if mode == "fsdp":
        assert counts["groups"] == 1 and counts["fsdp_reduce_scatters"] == counts["steps"]
    else:
        assert counts["ddp_buckets"] == counts["steps"]


@pytest.mark.parametrize("first,second", [("fsdp", "none"), ("none", "ddp")])
def test_checkpoint_resumes_on_another_number_of_processes(corpus, tmp_path, first, second):
    """2 processes -> 1 and 1 -> 2: the checkpoint holds full tensors by name, so any world size resumes it."""
    straight = _config(corpus, tmp_path / "straight", batch_size=2 * B, max_steps=4, save_interval=2)
    train(straight)
    run = tmp_path / "switched"
    for mode, steps, resume in ((first, 2, False), (second, 4, True)):
        world = 1 if mode == "none" else 2
        cfg = _config(corpus, run, batch_size=2 * B // world, max_steps=steps, save_interval=2, parallel=mode,
                      resume=resume)
        train(cfg) if world == 1 else _spawn(cfg, tmp_path, world)
    assert [c.name for c in list_checkpoints(run)] == ["step_000002", "step_000004"]
    _assert_close(_final_weights(tmp_path / "straight"), _final_weights(run))
    meta = json.loads((list_checkpoints(run)[-1] / "meta.json").read_text())
    assert meta["world_size"] == (1 if second == "none" else 2)
