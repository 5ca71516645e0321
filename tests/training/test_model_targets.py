"""--draft_targets model: the extra heads and the drafter scored against the frozen model's own greedy choices, from
a plain forward as the reference; on the model's own greedy text the same as the text's targets; refused unless the
base is frozen."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multitoken import MTPModel
from multitoken.decoding.generate import generate
from multitoken.errors import ConfigError
from multitoken.training.chunked_ce import IGNORE_INDEX
from multitoken.training.loss import mtp_eval_batch, mtp_loss
from tests.conftest import tiny_model_config, tiny_train_config


def _model(**overrides) -> MTPModel:
    torch.manual_seed(0)
    values = dict(n_layer=5, n_future=3, drafter="eagle3", max_seq_len=64)
    values.update(overrides)
    return MTPModel(tiny_model_config(**values)).eval()


def test_the_drafts_are_scored_against_the_models_argmax_after_the_text():
    """Extra head h and drafter step s (guessing h = s + 2 ahead) at position i: the target is the argmax of the
    model's next-token logits at i + h - 1, from one plain forward; not scored past the window."""
    model = _model()
    tokens = torch.randint(0, 64, (2, 21))
    T, steps = 18, 2  # 21 - n_future
    total, per = mtp_loss(model, tokens, "naive", drafter_steps=steps, targets_from="model")
    with torch.no_grad():
        choice = model(tokens[:, :T]).argmax(-1)  # (B, T): the model's token after each position
        z, features = model.trunk_features(tokens[:, :T])
        states = model.drafter_states(features, [F.pad(tokens[:, 1 + s:1 + s + T], (0, max(0, 1 + s + T - 21)))
                                                 for s in range(steps)])

        def reference(logits: torch.Tensor, ahead: int) -> torch.Tensor:
            target = torch.full((2, T), IGNORE_INDEX)
            target[:, :T - ahead + 1] = choice[:, ahead - 1:]
            return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)

        for h in (2, 3):
            logits = model.unembed(model.head(h - 1, z))
            torch.testing.assert_close(per[h - 1], reference(logits, h), rtol=1e-5, atol=1e-6)
        for s in range(steps):
            torch.testing.assert_close(per[3 + s], reference(model.drafter.logits(states[s]), s + 2),
                                       rtol=1e-5, atol=1e-6)
    text_total, text_per = mtp_loss(model, tokens, "naive", drafter_steps=steps)
    torch.testing.assert_close(text_per[0], per[0])  # head 1 is the model itself: scored against the text
    assert not torch.allclose(text_per[1:], per[1:])  # random text is not what the model would say


def test_on_the_models_own_greedy_text_the_model_and_the_text_agree():
    model = _model()
    prompt = torch.randint(0, 64, (2, 1))
    tokens = torch.cat([prompt, generate(model, prompt, 23)], dim=1)  # every target is one of the model's choices
    by_text = mtp_eval_batch(model, tokens, drafter_steps=2)
    by_model = mtp_eval_batch(model, tokens, drafter_steps=2, targets_from="model")
    assert by_text[1][0] == by_text[3][0]  # head 1 on its own greedy text is always right
    # The model's targets end h - 1 positions before the window does (2 rows): heads 2 and 3, the drafter's steps 1
    # and 2 (2 and 3 ahead). Where both score, they agree: the hits differ at most by the positions left out.
    missing = torch.tensor([0, 2, 4, 2, 4])
    assert torch.equal(by_model[3], by_text[3] - missing)
    assert torch.all(by_model[1] <= by_text[1]) and torch.all(by_text[1] - by_model[1] <= missing)


def test_model_targets_need_the_base_frozen(corpus, tmp_path):
    with pytest.raises(ConfigError, match="--freeze base"):
        tiny_train_config(corpus, tmp_path / "run", draft_targets="model")
