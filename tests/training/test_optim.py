"""Learning-rate schedule and weight-decay groups."""

import pytest

from multitoken import MTPModel, OptimConfig
from multitoken.training.optim import build_optimizer, get_lr
from tests.conftest import tiny_model_config


def test_warmup_then_cosine_to_min_ratio():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert get_lr(0, 110, cfg) == pytest.approx(0.1)
    assert get_lr(9, 110, cfg) == pytest.approx(1.0)
    assert get_lr(60, 110, cfg) == pytest.approx(0.55)  # halfway through the cosine
    assert get_lr(110, 110, cfg) == pytest.approx(0.1)
    lrs = [get_lr(s, 110, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_no_weight_decay_on_norms_and_embeddings():
    model = MTPModel(tiny_model_config())
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1), "cpu")
    decay, no_decay = ({id(p) for p in g["params"]} for g in opt.param_groups)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(n.endswith("norm.weight") or n.startswith("tok_embeddings") for i, n in names.items() if i in no_decay)
    assert id(model.tok_embeddings.weight) in no_decay and id(model.norm.weight) in no_decay
    assert id(model.output.weight) in decay and id(model.layers[0].attention.wq.weight) in decay
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
