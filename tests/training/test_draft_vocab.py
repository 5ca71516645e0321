"""Training heads over a draft vocabulary: which tokens it holds, the narrowed loss against a direct computation,
and a frozen model trained so still saying exactly what it said."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multitoken import MTPModel
from multitoken.checkpoint import list_checkpoints, load_checkpoint
from multitoken.training.chunked_ce import IGNORE_INDEX
from multitoken.training.draft_vocab import most_frequent_tokens
from multitoken.training.loss import head_loss, mtp_eval_batch
from multitoken.training.trainer import Trainer, train
from tests.conftest import tiny_model_config, tiny_train_config


def test_most_frequent_tokens_counted_in_pieces_equal_a_plain_count(monkeypatch):
    import multitoken.training.draft_vocab as draft_vocab

    monkeypatch.setattr(draft_vocab, "_CHUNK", 7)  # many pieces, the last one short
    rng = np.random.default_rng(0)
    tokens = rng.zipf(1.5, 500).clip(max=40).astype(np.uint16) - 1
    ids, coverage, counted = most_frequent_tokens(tokens, 6, 64)
    counts = Counter(tokens.tolist())
    ranked = sorted(range(64), key=lambda t: (-counts[t], t))[:6]  # ties to the lower id
    assert ids.tolist() == sorted(ranked) and counted == 500
    assert coverage == pytest.approx(sum(counts[t] for t in ranked) / 500)


@pytest.mark.parametrize("ce", ["chunked", "plain"])
def test_narrowed_loss_equals_the_cross_entropy_over_the_vocabulary_rows(ce):
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(vocab_size=32, n_future=2, n_layer=3))
    model.requires_grad_(False)
    vocab = torch.tensor([1, 4, 5, 9, 20, 31])
    h = torch.randn(2, 7, 32, requires_grad=True)
    targets = torch.tensor([[1, 4, 3, 9, 20, 31, 0], [5, 5, IGNORE_INDEX, 2, 31, 1, 4]])
    loss = head_loss(model, h, targets, ce, vocab=vocab)
    # Directly: full logits, their vocabulary columns, targets outside it dropped.
    logits = model.output(model.norm(h))[..., vocab].flatten(0, 1)
    flat = targets.flatten()
    keep = torch.isin(flat, vocab)
    expected = F.cross_entropy(logits[keep], torch.searchsorted(vocab, flat[keep]))
    torch.testing.assert_close(loss, expected)
    g, = torch.autograd.grad(loss, h)
    g_expected, = torch.autograd.grad(expected, h)
    torch.testing.assert_close(g, g_expected)


def test_validation_scores_drafting_heads_as_they_draft():
    """Loss over the targets in the vocabulary; top-1 over all positions (a target outside it is a miss)."""
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(vocab_size=16, n_future=2, n_layer=3, draft_vocab=5)).eval()
    model.draft_ids.copy_(torch.tensor([0, 3, 4, 8, 9]))
    tokens = torch.randint(0, 16, (2, 13))
    loss_sum, correct, loss_count, count = mtp_eval_batch(model, tokens)
    with torch.no_grad():
        logits = model(tokens[:, :-2], return_all_heads=True)[:, :, 1]  # head 2, -inf outside the vocabulary
    y = tokens[:, 2:]
    inside = torch.isin(y, model.draft_ids)
    nll = -torch.log_softmax(logits, -1).gather(-1, y[..., None])[..., 0]
    assert int(loss_count[1]) == int(inside.sum()) and int(count[1]) == y.numel() == int(count[0])
    torch.testing.assert_close(loss_sum[1], nll[inside].sum())
    assert int(correct[1]) == int((logits.argmax(-1) == y).sum())


@pytest.fixture
def source_run(corpus, tmp_path):
    run = tmp_path / "source"
    train(tiny_train_config(corpus, run, max_steps=3, model=tiny_model_config(vocab_size=256, n_future=1,
                                                                              tie_embeddings=True)))
    return run


def test_frozen_base_heads_on_a_draft_vocabulary(corpus, tmp_path, source_run):
    """--freeze base with model.draft_vocab: the vocabulary is the data's most frequent tokens, saved with the
    weights; the model says what it said, and speculative decoding gives exactly that."""
    from multitoken.decoding.generate import generate
    from multitoken.decoding.speculative import speculative_generate
    from multitoken.training.evaluate import format_eval_table

    cfg = tiny_train_config(corpus, tmp_path / "heads", init_from=str(source_run), freeze="base", max_steps=4,
                            model=tiny_model_config(vocab_size=256, n_future=3, draft_vocab=10))
    trainer = Trainer(cfg)
    data = np.asarray(trainer.data.train).tolist()
    counts = Counter(data)
    assert trainer.model.draft_ids.tolist() == sorted(sorted(range(256), key=lambda t: (-counts[t], t))[:10])
    assert "10 most frequent tokens" in trainer.draft_note
    result = trainer.fit()
    trainer.close()
    assert all(0 < c < 1 for c in result["val"]["draft_coverage"]), result["val"]["draft_coverage"]
    assert "extra heads draft over 10 tokens" in format_eval_table(result["val"])
    old, new = load_checkpoint(source_run)[0], load_checkpoint(tmp_path / "heads")[0]
    assert new.config.draft_vocab == 10 and torch.equal(new.draft_ids, trainer.model.draft_ids)
    idx = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(old(idx), new(idx))
    prompt = idx[:1, :8]
    expected = generate(old, prompt, 20, temperature=0.0)
    assert torch.equal(speculative_generate(new, prompt, 20, temperature=0.0)[0], expected)

    # Going on from it with the same size keeps its vocabulary; with none, the heads draft over every token.
    again = Trainer(tiny_train_config(corpus, tmp_path / "again", init_from=str(tmp_path / "heads"), max_steps=1,
                                      freeze="base", model=tiny_model_config(vocab_size=256, n_future=3,
                                                                             draft_vocab=10)))
    assert again.draft_note is None and torch.equal(again.model.draft_ids, new.draft_ids)
    again.close()
    plain = Trainer(tiny_train_config(corpus, tmp_path / "plain", init_from=str(tmp_path / "heads"), max_steps=1,
                                      model=tiny_model_config(vocab_size=256, n_future=3)))
    assert not hasattr(plain.model, "draft_ids")
    plain.close()


def test_export_leaves_the_draft_vocabulary_out(corpus, tmp_path, source_run):
    from multitoken.interop.convert import convert
    from multitoken.interop.export import export

    train(tiny_train_config(corpus, tmp_path / "heads", init_from=str(source_run), freeze="base", max_steps=1,
                            model=tiny_model_config(vocab_size=256, n_future=2, draft_vocab=16)))
    ckpt = list_checkpoints(tmp_path / "heads")[-1]
    export(ckpt, "hf", tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "back")
    back = load_checkpoint(tmp_path / "back")[0]
    model = load_checkpoint(ckpt)[0]
    assert back.config.draft_vocab == 0
    idx = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(back(idx), model(idx))


def test_a_draft_vocabulary_larger_than_the_model_s_is_one_line(corpus, tmp_path, source_run, capsys):
    """The size is checked against the checkpoint's vocabulary (256 here), not the command line's default model."""
    from tests.cli.conftest import assert_one_line_error, run_cli

    code, _, err = run_cli(capsys, "train", "--init-from", source_run, "--model.n_future", "2", "--freeze", "base",
                           "--model.draft_vocab", "300", "--data", corpus, "--out_dir", tmp_path / "x")
    assert_one_line_error(code, err, "model.draft_vocab (300) is larger than the vocabulary (256)")
    code, _, err = run_cli(capsys, "train", "--model.draft_vocab", "-1", "--out_dir", tmp_path / "y")
    assert_one_line_error(code, err, "model.draft_vocab must be 0")
