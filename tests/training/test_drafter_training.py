"""Training the sequential drafter: its loss from an independent reference, the head loop unchanged beside it, the
base bit for bit under --freeze base, and from scratch the trunk learning from it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from multitoken import MTPModel
from multitoken.checkpoint import list_checkpoints, load_checkpoint
from multitoken.training.chunked_ce import IGNORE_INDEX
from multitoken.training.evaluate import evaluate
from multitoken.training.loss import mtp_eval_batch, mtp_loss
from multitoken.training.trainer import Trainer, train
from tests.conftest import tiny_model_config, tiny_train_config


def _model(**overrides) -> MTPModel:
    torch.manual_seed(0)
    values = dict(n_layer=5, n_future=2, drafter="eagle3", max_seq_len=32)
    values.update(overrides)
    return MTPModel(tiny_model_config(**values))


def test_drafter_targets_are_the_tokens_two_and_more_ahead_within_the_document():
    """Step s at position i predicts t_{i+2+s}, scored only inside the window and the document (a plain
    cross-entropy over hand-built targets as the reference)."""
    model = _model()
    eot = 5
    tokens = torch.tensor([[1, 2, 3, eot, 7, 8, 9, 10, 11]])  # T = 7 inputs with n_future = 2
    T, steps = 7, 3
    total, per = mtp_loss(model, tokens, "naive", eot_id=eot, drafter_steps=steps)
    with torch.no_grad():
        _, features = model.trunk_features(tokens[:, :T])
        reads = [torch.tensor([[tokens[0, i + 1 + s].item() if i + 1 + s < 9 else 0 for i in range(T)]])
                 for s in range(steps)]
        states = model.drafter_states(features, reads)
        for s in range(steps):
            target = torch.full((1, T), IGNORE_INDEX)
            for i in range(T):
                j = i + 2 + s
                crosses = eot in tokens[0, i:j].tolist()  # an end among t_i .. t_{j-1}: the target is the next doc's
                if j < 9 and not crosses:
                    target[0, i] = tokens[0, j]
            reference = F.cross_entropy(model.drafter.logits(states[s])[0], target[0], ignore_index=IGNORE_INDEX)
            torch.testing.assert_close(per[2 + s], reference, rtol=1e-5, atol=1e-6)


def test_sequential_and_naive_give_the_same_gradients_with_a_drafter():
    model = _model(n_future=3, n_layer=6)
    tokens = torch.randint(0, 64, (3, 20))
    grads = []
    for strategy in ("sequential", "naive"):
        model.zero_grad()
        total, per = mtp_loss(model, tokens, strategy, drafter_steps=2, drafter_weight=0.3)
        total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert per.shape == (5,)
    assert grads[0].keys() == grads[1].keys() and any(n.startswith("drafter.") for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_from_scratch_the_trunk_learns_from_the_drafters_loss():
    model = _model()
    tokens = torch.randint(0, 64, (2, 18))
    trunk = model.layers[0].attention.wq.weight

    def trunk_grad(steps: int) -> torch.Tensor:
        model.zero_grad()
        mtp_loss(model, tokens, drafter_steps=steps)[0].backward()
        return trunk.grad.clone()

    assert not torch.equal(trunk_grad(0), trunk_grad(2))


def test_evaluation_scores_the_drafters_steps_like_training():
    model = _model().eval()
    tokens = torch.randint(0, 64, (2, 18))
    loss_sum, _, scored, _ = mtp_eval_batch(model, tokens, drafter_steps=2)
    _, per = mtp_loss(model, tokens, "naive", drafter_steps=2)
    torch.testing.assert_close(loss_sum / scored, per.double().float(), rtol=1e-4, atol=1e-5)


def test_freeze_base_trains_only_the_drafter_and_the_model_says_what_it_said(corpus, tmp_path):
    """`train --init-from CKPT --freeze base --model.drafter eagle3` on a next-token model: every source tensor and
    head 1's logits are bit-identical; the drafter learned, starting from the base's unembedding; greedy decoding
    with its drafts is the source's greedy output. Its targets are the base's own choices (--draft_targets model),
    and validation scores it against them too."""
    from multitoken.decoding.generate import generate
    from multitoken.decoding.speculative import speculative_generate

    source = tmp_path / "source"
    train(tiny_train_config(corpus, source, max_steps=3, model=tiny_model_config(vocab_size=256, n_future=1)))
    cfg = tiny_train_config(corpus, tmp_path / "drafter", init_from=str(source), freeze="base", max_steps=4,
                            model=tiny_model_config(vocab_size=256, n_future=1, drafter="eagle3"),
                            draft_targets="model")
    trainer = Trainer(cfg)
    val_batches = trainer.val_batches
    assert torch.equal(trainer.model.drafter.output.weight, trainer.model.output.weight)  # starts as the base's
    assert "drafter reading base layers [1, 2, 3]" in trainer.init_note
    trainer.close()
    train(cfg)
    before = load_file(list_checkpoints(source)[-1] / "model.safetensors")
    after = load_file(list_checkpoints(tmp_path / "drafter")[-1] / "model.safetensors")
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not torch.equal(after["drafter.output.weight"], before["output.weight"])  # the drafter did learn
    old, new = load_checkpoint(source)[0], load_checkpoint(tmp_path / "drafter")[0]
    idx = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(old(idx), new(idx))
    prompt = idx[:1, :8]
    expected = generate(old, prompt, 20)
    assert torch.equal(speculative_generate(new, prompt, 20)[0], expected)
    records = [line for line in (tmp_path / "drafter" / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert '"drafter_acc"' in records[-1] and '"drafter_tau_sim"' in records[-1]
    logged = json.loads(records[-1])["drafter_acc"]
    by_model, by_text = (evaluate(new, val_batches, torch.device("cpu"), drafter_steps=3, targets_from=targets)
                         ["drafter_acc"] for targets in ("model", "text"))
    assert logged == pytest.approx(by_model) and logged != pytest.approx(by_text)
