"""The sequential drafter (EAGLE-3's layout): its features, its training chain against its decoding chain, and
that it changes nothing the heads compute."""

from __future__ import annotations

import pytest
import torch

from multitoken import MTPModel
from multitoken.errors import ConfigError
from multitoken.model import DecodeCaches, Positions
from multitoken.training.drafter_loss import drafter_batch
from tests.conftest import tiny_model_config


def _model(**overrides) -> MTPModel:
    torch.manual_seed(0)
    values = dict(n_layer=5, n_future=2, n_kv_head=2, drafter="eagle3", max_seq_len=32)
    values.update(overrides)
    return MTPModel(tiny_model_config(**values)).eval()


def test_features_are_the_inputs_of_the_chosen_base_layers():
    model = _model(drafter_layers=[3, 0, 2])
    idx = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        z, features = model.trunk_features(idx)
        inputs, x = [], model.embed(idx)  # an independent walk through the base's layers
        for layer in model.layers:
            inputs.append(x)
            x = layer(x, *model.rope(9, None))
        assert torch.equal(z, model.trunk(idx)) and torch.equal(z, inputs[3])
        assert torch.equal(features, torch.cat([inputs[3], inputs[0], inputs[2]], dim=-1))


@pytest.mark.parametrize("base_layers,expected", [(3, (0, 1, 2)), (4, (1, 2, 3)), (6, (1, 3, 5)), (7, (2, 3, 4)),
                                                  (30, (2, 15, 27))])
def test_default_feature_layers_follow_the_engines_rule(base_layers, expected):
    config = tiny_model_config(n_layer=base_layers, n_future=1, drafter="eagle3")
    assert config.drafter_feature_layers == expected


def test_bad_feature_layers_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="three distinct"):
        tiny_model_config(drafter="eagle3", drafter_layers=[1, 1, 2])
    with pytest.raises(ConfigError, match="layers 0..2"):
        MTPModel(tiny_model_config(n_layer=4, n_future=2, drafter="eagle3", drafter_layers=[0, 1, 3]))
    with pytest.raises(ConfigError, match="deeper model"):
        MTPModel(tiny_model_config(n_layer=4, n_future=3, drafter="eagle3"))


def test_the_drafter_changes_nothing_the_heads_compute():
    with_drafter = _model()
    without = MTPModel(tiny_model_config(n_layer=5, n_future=2, n_kv_head=2, max_seq_len=32)).eval()
    without.load_state_dict({k: v for k, v in with_drafter.state_dict().items() if not k.startswith("drafter.")})
    idx = torch.randint(0, 64, (2, 11))
    with torch.no_grad():
        assert torch.equal(with_drafter(idx, return_all_heads=True), without(idx, return_all_heads=True))


@pytest.mark.parametrize("family", [{}, {"qkv_bias": True, "qk_norm": True, "norm_unit_offset": True,
                                         "activation": "gelu_tanh", "sandwich_norm": True,
                                         "scale_embeddings": True}])
def test_the_unrolled_training_chain_is_the_cached_decoding_chain(family):
    """Step s of training's chain at start i (all starts at once, one attention with a diagonal) equals decoding's
    chain from i with a KV cache: a pass over positions 0..i, then s single steps on the text's tokens and the
    module's own states. Whatever the base's family, the drafter's layer is a Llama layer."""
    model = _model(**family)
    assert not hasattr(model.drafter.attention, "q_norm") and model.drafter.attention.wq.bias is None
    B, T, steps = 2, 10, 3
    tokens = torch.randint(0, 64, (B, T + steps + 1))
    with torch.no_grad():
        _, features = model.trunk_features(tokens[:, :T])
        reads, _ = drafter_batch(tokens, T, steps)
        unrolled = model.drafter_states(features, reads)
        state = model.drafter.fc(features)
        for i in range(T):
            with DecodeCaches(model, B, 32, heads="none", drafter_slots=32):
                where = Positions.aligned(0, i + 1)
                y = model.drafter(model.tok_embeddings(tokens[:, 1:i + 2]), state[:, :i + 1], *model.rope(i + 1, where),
                                  where)[:, -1]
                torch.testing.assert_close(y, unrolled[0][:, i], rtol=1e-5, atol=1e-5)
                for s in range(1, steps):
                    where = Positions.aligned(i + s, 1)
                    embedded = model.tok_embeddings(tokens[:, i + 1 + s, None])
                    y = model.drafter(embedded, y[:, None], *model.rope(1, where), where)[:, 0]
                    torch.testing.assert_close(y, unrolled[s][:, i], rtol=1e-5, atol=1e-5)


def test_parameter_counts_name_the_drafter():
    counts = _model().num_params()
    assert counts["drafter"] > 0 and counts["total"] == sum(v for k, v in counts.items() if k != "total")
