"""Training paths only a CUDA device takes: bf16 autocast, the CUDA RNG state in a resume, fused AdamW. Skipped on
machines without CUDA (CPU runs never exercise these branches, so only a GPU can check them)."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from multitoken import MTPModel, OptimConfig
from multitoken.checkpoint import list_checkpoints
from multitoken.training.loss import mtp_loss
from multitoken.training.optim import build_optimizer
from multitoken.training.runtime import autocast_for
from multitoken.training.trainer import Trainer, train
from tests.conftest import tiny_model_config, tiny_train_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_autocast_step_matches_fp32_within_tolerance():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(vocab_size=256, d_model=64, n_future=2)).cuda()
    tokens = torch.randint(0, 256, (4, 34), device="cuda")
    losses = {}
    grads = {}
    for precision in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with autocast_for(torch.device("cuda"), precision):
            total, per_head = mtp_loss(model, tokens, "sequential")
        total.backward()
        losses[precision] = per_head.float()
        grads[precision] = torch.cat([p.grad.float().flatten() for p in model.parameters()])
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=2e-2, atol=2e-2)
    cosine = torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)
    assert cosine > 0.99, cosine


def test_fused_adamw_on_cuda_matches_the_reference_step():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(vocab_size=256)).cuda()
    reference = MTPModel(tiny_model_config(vocab_size=256)).cuda()
    reference.load_state_dict(model.state_dict())
    fused = build_optimizer(model, OptimConfig(), "cuda")
    plain = build_optimizer(reference, OptimConfig(), "cpu")  # the unfused implementation, on the same device
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    tokens = torch.randint(0, 256, (2, 34), device="cuda")
    for m, opt in ((model, fused), (reference, plain)):
        for _ in range(3):
            mtp_loss(m, tokens, "naive")[0].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_resume_on_cuda_restores_the_cuda_rng_and_is_bit_identical(corpus, tmp_path):
    straight = tiny_train_config(corpus, tmp_path / "straight", device="cuda", max_steps=6, save_interval=3)
    train(straight)
    shutil.copytree(tmp_path / "straight", tmp_path / "killed")
    shutil.rmtree(list_checkpoints(tmp_path / "killed")[-1])
    train(tiny_train_config(corpus, tmp_path / "killed", device="cuda", max_steps=6, save_interval=3, resume=True))
    a = load_file(list_checkpoints(tmp_path / "straight")[-1] / "model.safetensors")
    b = load_file(list_checkpoints(tmp_path / "killed")[-1] / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # The CUDA generator comes back exactly as saved (models with dropout or sampling depend on it): plant a state
    # no seeding would give and check the resumed process holds it.
    ckpt = list_checkpoints(tmp_path / "killed")[0]
    state = torch.load(ckpt / "trainer.pt", weights_only=True)
    torch.cuda.manual_seed(999)
    torch.rand(7, device="cuda")
    planted = torch.cuda.get_rng_state()
    state["cuda_rng"] = planted
    torch.save(state, ckpt / "trainer.pt")
    shutil.rmtree(list_checkpoints(tmp_path / "killed")[-1])
    trainer = Trainer(tiny_train_config(corpus, tmp_path / "killed", device="cuda", max_steps=6, save_interval=3,
                                        resume=True))
    try:
        assert trainer.resumed_from == ckpt and torch.equal(torch.cuda.get_rng_state(), planted)
    finally:
        trainer.close()
