"""Hugging Face Llama-family folders: multitoken's logits and greedy tokens equal transformers' on the same weights."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

import multitoken
from multitoken.interop import hf
from multitoken.interop.convert import convert
from multitoken.checkpoint import load_checkpoint
from tests.interop.conftest import VOCAB, make_hf_model, transformers_greedy

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="transformers needs Python >= 3.11")
transformers = pytest.importorskip("transformers")

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}
VARIANTS = {
    "llama-gqa": ("llama", dict(num_key_value_heads=2)),
    "llama-tied": ("llama", dict(tie_word_embeddings=True)),  # SmolLM / Llama 3.2 1B style
    "llama3-rope-scaling": ("llama", dict(num_key_value_heads=2, rope_theta=500000.0, rope_scaling=LLAMA3_SCALING)),
    "llama-head-dim": ("llama", dict(head_dim=24)),  # heads wider than hidden_size / num_attention_heads
    "mistral": ("mistral", dict(num_key_value_heads=2, sliding_window=None)),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def converted(request, tmp_path_factory):
    arch, overrides = VARIANTS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    reference = make_hf_model(root / "hf", arch, **overrides)
    convert(root / "hf", root / "mt")
    model, _, tokenizer = load_checkpoint(root / "mt")
    return request.param, reference, model, tokenizer


def test_logits_equal_transformers(converted):
    name, reference, model, _ = converted
    idx = torch.randint(0, VOCAB, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(idx).logits, model(idx)
    assert (expected - got).abs().max().item() < 1e-4, name


def test_greedy_tokens_equal_transformers_generate(converted):
    from multitoken.decoding.generate import generate

    name, reference, model, _ = converted
    prompt = torch.randint(3, VOCAB, (1, 9), generator=torch.Generator().manual_seed(2))
    expected = transformers_greedy(reference, prompt, 32)
    got = generate(model, prompt, 32, temperature=0.0)
    assert torch.equal(expected, got), name


def test_converted_config_and_tokenizer(converted):
    name, reference, model, tokenizer = converted
    c = model.config
    assert c.n_future == 1 and c.n_trunk_layers + 1 == reference.config.num_hidden_layers
    assert c.tie_embeddings == (name == "llama-tied")
    assert model.output.weight is model.tok_embeddings.weight if c.tie_embeddings else True
    assert (c.head_size, c.kv_heads) == (reference.config.head_dim, reference.config.num_key_value_heads)
    # The folder's tokenizer came along: its end-of-text token is the model's eos, prompts start with <s>
    assert (tokenizer.kind, tokenizer.eot_id, tokenizer.bos_id) == ("bpe", 2, 1)
    assert tokenizer.encode_prompt("w5 w7") == [1, 5, 7]


def test_each_difference_is_needed(tmp_path):
    """Negative controls: the q/k permutation and the rope scaling each change the logits, so the tests above would
    catch either one missing."""
    reference = make_hf_model(tmp_path / "hf", num_key_value_heads=2, rope_theta=500000.0,
                              rope_scaling=LLAMA3_SCALING)
    model = multitoken.load_model(tmp_path / "hf")
    idx = torch.randint(0, VOCAB, (1, 48), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(idx).logits
        assert (expected - model(idx)).abs().max() < 1e-4
        unscaled = multitoken.MTPModel.from_state_dict(dataclasses.replace(model.config, rope_scaling=None),
                                                       model.state_dict())
        assert (expected - unscaled(idx)).abs().max() > 1e-3
        state = {k: hf.interleaved_to_halves(v, 4 if "wq" in k else 2, 16) if k.endswith(("wq.weight", "wk.weight"))
                 else v for k, v in model.state_dict().items()}  # undo the permutation: transformers' rows as-is
        unpermuted = multitoken.MTPModel.from_state_dict(model.config, state)
        assert (expected - unpermuted(idx)).abs().max() > 1e-3


def test_permutation_round_trips():
    w = torch.arange(8 * 16 * 3, dtype=torch.float32).reshape(8 * 16, 3)
    halves = hf.interleaved_to_halves(w, 8, 16)
    assert torch.equal(hf.halves_to_interleaved(halves, 8, 16), w)
    # Row 1 of a head (the second element of the first pair) sits half a head further down in transformers' layout
    assert torch.equal(halves[8], w[1]) and torch.equal(halves[1], w[2])


def test_sharded_folder_converts(tmp_path):
    reference = make_hf_model(tmp_path / "hf", shard_size="60KB")
    assert (tmp_path / "hf" / hf.INDEX_FILE).exists() and len(list((tmp_path / "hf").glob("model-*.safetensors"))) > 1
    model = multitoken.load_model(tmp_path / "hf")
    idx = torch.randint(0, VOCAB, (1, 20))
    with torch.no_grad():
        assert (reference(idx).logits - model(idx)).abs().max() < 1e-4


def test_a_window_as_long_as_the_context_is_left_out(tmp_path):
    """Within the context a window that long is plain causal attention: the converted config has none."""
    make_hf_model(tmp_path / "hf", "mistral", sliding_window=128, max_position_embeddings=128)
    result = convert(tmp_path / "hf", tmp_path / "mt")
    assert result.model.config.sliding_window is None and result.model.config.max_seq_len == 128


def test_bfloat16_conversion(tmp_path):
    make_hf_model(tmp_path / "hf")
    result = convert(tmp_path / "hf", tmp_path / "mt", dtype="bfloat16")
    model = multitoken.load_model(tmp_path / "mt")
    assert result.dtype == torch.bfloat16 and model.output.weight.dtype == torch.bfloat16
    assert model(torch.tensor([[3, 4, 5]])).dtype == torch.bfloat16


def test_end_of_turn_tokens_and_a_separate_chat_template_come_along(tmp_path):
    """Gemma-style folders: generation_config.json lists an end-of-turn token beside eos, and transformers 5 keeps
    the chat template in chat_template.jinja. Both reach the checkpoint, stop decoding, and go back out on export."""
    import json

    from multitoken.decoding.text import until_eos
    from multitoken.interop.export import export

    template = "{% for m in messages %}w3 {{ m['content'] }} w4 {% endfor %}"
    make_hf_model(tmp_path / "hf")
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    (tmp_path / "hf" / "chat_template.jinja").write_text(template)
    convert(tmp_path / "hf", tmp_path / "mt")
    tokenizer = load_checkpoint(tmp_path / "mt")[2]
    assert tokenizer.stop_ids == [2, 7] and tokenizer.chat_template == template
    assert until_eos([5, 6, 7, 8, 2], tokenizer.stop_ids) == ([5, 6], 3)  # the first of either ends the text
    export(tmp_path / "mt", "hf", tmp_path / "back")
    assert json.loads((tmp_path / "back" / "generation_config.json").read_text())["eos_token_id"] == [2, 7]
    convert(tmp_path / "back", tmp_path / "again")
    assert load_checkpoint(tmp_path / "again")[2].stop_ids == [2, 7]
