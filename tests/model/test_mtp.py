"""The model's shape contract, Meta's layout, parameter matching and causality."""

import pytest
import torch
import torch.nn.functional as F

from multitoken import ModelConfig, MTPModel
from tests.conftest import tiny_model_config


def test_public_api_shapes():
    model = MTPModel(ModelConfig(vocab_size=256, d_model=128, n_layer=4, n_head=4, n_future=4, max_seq_len=64))
    idx = torch.randint(0, 256, (2, 10))
    assert model(idx).shape == (2, 10, 256)
    assert model(idx, return_all_heads=True).shape == (2, 10, 4, 256)


def test_next_token_head_of_all_heads_equals_plain_forward():
    model = MTPModel(tiny_model_config(n_future=3))
    idx = torch.randint(0, 64, (2, 9))
    torch.testing.assert_close(model(idx, return_all_heads=True)[:, :, 0], model(idx))


def test_state_dict_keys_follow_meta_layout():
    model = MTPModel(tiny_model_config(n_layer=5, n_future=3))
    keys = set(model.state_dict())
    assert {"tok_embeddings.weight", "norm.weight", "output.weight"} <= keys
    # layers = trunk (5 - 3 = 2) + head 1; extra_heads = heads 2..3
    assert {k.split(".")[1] for k in keys if k.startswith("layers.")} == {"0", "1", "2"}
    assert {k.split(".")[1] for k in keys if k.startswith("extra_heads.")} == {"0", "1"}
    assert "layers.0.attention.wq.weight" in keys and "extra_heads.1.feed_forward.w3.weight" in keys
    assert not any("rope" in k or "cache" in k for k in keys)


def test_parameter_matched_across_n_future():
    counts = {n: MTPModel(tiny_model_config(n_layer=6, n_future=n)).num_params()["total"] for n in (1, 2, 4, 6)}
    assert len(set(counts.values())) == 1, counts


def test_n_future_one_is_a_plain_next_token_lm():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_layer=3, n_future=1))
    assert len(model.extra_heads) == 0 and len(model.layers) == 3
    idx = torch.randint(0, 64, (2, 12))
    # The forward is exactly embed -> all layers -> norm -> output, an ordinary Llama.
    x = model.tok_embeddings(idx)
    cos, sin = model.rope_cos[:12], model.rope_sin[:12]
    for layer in model.layers:
        x = layer(x, cos, sin)
    torch.testing.assert_close(model(idx), model.output(model.norm(x)))
    torch.testing.assert_close(model(idx, return_all_heads=True)[:, :, 0], model(idx))


def test_every_head_reads_the_trunk_not_the_previous_head():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=3))
    idx = torch.randint(0, 64, (1, 8))
    before = model(idx, return_all_heads=True)
    with torch.no_grad():  # perturbing head 2 must leave heads 1 and 3 untouched
        for p in model.extra_heads[0].parameters():
            p.add_(torch.randn_like(p))
    after = model(idx, return_all_heads=True)
    torch.testing.assert_close(after[:, :, [0, 2]], before[:, :, [0, 2]])
    assert not torch.allclose(after[:, :, 1], before[:, :, 1])


def test_causal_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=2))
    idx = torch.randint(0, 64, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 64
    a, b = model(idx, return_all_heads=True), model(changed, return_all_heads=True)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_untied_embeddings_and_no_biases():
    model = MTPModel(tiny_model_config())
    assert model.tok_embeddings.weight.data_ptr() != model.output.weight.data_ptr()
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


def test_grouped_query_attention_runs_and_shrinks_kv():
    full = MTPModel(tiny_model_config(n_head=4))
    gqa = MTPModel(tiny_model_config(n_head=4, n_kv_head=2))
    assert gqa.layers[0].attention.wk.weight.shape[0] == full.layers[0].attention.wk.weight.shape[0] // 2
    out = gqa(torch.randint(0, 64, (2, 8)))
    assert out.shape == (2, 8, 64) and torch.isfinite(out).all()


def test_initial_loss_is_near_uniform():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config())
    idx = torch.randint(0, 64, (4, 16))
    loss = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
    assert abs(loss.item() - torch.log(torch.tensor(64.0)).item()) < 0.3


def test_tied_embeddings_share_one_parameter():
    model = MTPModel(tiny_model_config(tie_embeddings=True))
    assert model.output.weight is model.tok_embeddings.weight
    assert model.num_params()["output"] == 0
    assert model.num_params()["total"] == sum(p.numel() for p in model.parameters())
    rebuilt = MTPModel.from_state_dict(model.config, {k: v for k, v in model.state_dict().items()
                                                      if k != "output.weight"})
    assert rebuilt.output.weight is rebuilt.tok_embeddings.weight


def test_explicit_head_dim_sets_attention_width():
    model = MTPModel(tiny_model_config(d_model=32, n_head=4, n_kv_head=2, head_dim=12))
    attn = model.layers[0].attention
    assert attn.wq.weight.shape == (48, 32) and attn.wk.weight.shape == (24, 32) and attn.wo.weight.shape == (32, 48)
    assert model(torch.randint(0, 64, (2, 5))).shape == (2, 5, 64)


def test_from_state_dict_equals_the_model_and_keeps_dtype():
    torch.manual_seed(0)
    model = MTPModel(tiny_model_config(n_future=3)).eval()
    rebuilt = MTPModel.from_state_dict(model.config, model.state_dict()).eval()
    idx = torch.randint(0, 64, (2, 9))
    assert torch.equal(model(idx, return_all_heads=True), rebuilt(idx, return_all_heads=True))
    half = MTPModel.from_state_dict(model.config, model.state_dict(), dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and half.rope_cos.dtype == torch.float32


def test_llama3_rope_scaling_stretches_only_long_wavelengths():
    import math

    from multitoken.model.layers import rope_frequencies

    base = tiny_model_config(d_model=64, n_head=2, rope_theta=500000.0)
    plain = rope_frequencies(base)
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    scaled = rope_frequencies(tiny_model_config(d_model=64, n_head=2, rope_theta=500000.0, rope_scaling=scaling))
    wavelen = 2 * math.pi / plain
    short, long = wavelen < 64 / 4, wavelen > 64 / 1
    assert torch.equal(scaled[short], plain[short]) and torch.allclose(scaled[long], plain[long] / 8)
    middle = ~short & ~long
    assert middle.any() and ((scaled[middle] < plain[middle]) & (scaled[middle] > plain[middle] / 8)).all()


def test_bad_rope_scaling_is_refused():
    from multitoken.errors import ConfigError

    with pytest.raises(ConfigError, match="rope_type 'yarn' is not supported"):
        tiny_model_config(rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ConfigError, match="takes exactly factor"):
        tiny_model_config(rope_scaling={"rope_type": "linear"})
