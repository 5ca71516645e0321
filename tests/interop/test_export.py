"""Export to Hugging Face and Meta folders: transformers loads head 1 exactly, and convert gives back every head."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import multitoken
from multitoken import ModelConfig, MTPModel, TrainConfig
from multitoken.data.tokenizer import ByteTokenizer, load_tokenizer
from multitoken.interop.convert import convert
from multitoken.interop.export import export
from multitoken.interop.meta import ffn_rule_for, ffn_width
from multitoken.checkpoint import read_weights
from multitoken.errors import CheckpointError
from multitoken.training.checkpoint import save_checkpoint

SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 16}


def mtp_checkpoint(root, **overrides):
    """A random n_future=3 model with GQA, saved as a multitoken checkpoint (byte-level tokenizer)."""
    values = dict(vocab_size=256, d_model=64, n_layer=5, n_head=4, n_kv_head=2, n_future=3, max_seq_len=128)
    values.update(overrides)
    cfg = ModelConfig(**values)
    torch.manual_seed(0)
    model = MTPModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return save_checkpoint(root / "run", 1, model, TrainConfig(model=cfg), ByteTokenizer(), {}, {}, 1), model


@pytest.mark.skipif(sys.version_info < (3, 11), reason="transformers needs Python >= 3.11")
@pytest.mark.parametrize("variant", ["plain", "tied-llama3-headdim"])
def test_hf_export_loads_in_transformers_with_head1_logits(tmp_path, variant):
    transformers = pytest.importorskip("transformers")
    overrides = {} if variant == "plain" else dict(tie_embeddings=True, rope_scaling=SCALING, rope_theta=5e5,
                                                   head_dim=24)
    ckpt, model = mtp_checkpoint(tmp_path, **overrides)
    export(ckpt, "hf", tmp_path / "hf")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(reference).__name__ == "LlamaForCausalLM"
    idx = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (reference(idx).logits - model(idx)).abs().max() < 1e-4
    # The byte-level tokenizer travels as a tokenizer.json whose ids are the bytes
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer("héllo").input_ids == list("héllo".encode()) and tokenizer.decode([104, 105]) == "hi"
    heads = json.loads((tmp_path / "hf" / "mtp_heads.json").read_text())
    assert heads["n_future"] == 3


@pytest.mark.parametrize("fmt", ["hf", "meta"])
@pytest.mark.parametrize("tied", [False, True])
def test_export_then_convert_is_bit_identical(tmp_path, fmt, tied):
    ckpt, _ = mtp_checkpoint(tmp_path, tie_embeddings=tied)
    export(ckpt, fmt, tmp_path / "out")
    convert(tmp_path / "out", tmp_path / "back")
    before, after = read_weights(ckpt), read_weights(tmp_path / "back")
    assert before.keys() == after.keys()
    for name in before:  # every head, the trunk, norm, embeddings
        assert torch.equal(before[name], after[name]), name
    assert load_tokenizer(tmp_path / "back").kind == "bytes"
    back = multitoken.load_model(tmp_path / "back")
    assert back.config.n_future == 3 and back.config.tie_embeddings == tied


def test_meta_params_express_any_ffn_width():
    for dim, width in [(4096, 11008), (64, 96), (64, 500), (128, 256), (48, 7)]:
        multiple_of, multiplier = ffn_rule_for(dim, width)
        assert ffn_width(dim, multiple_of, multiplier) == width
    assert ffn_rule_for(4096, 11008) == (256, None)  # Llama 2 7B's own rule


def test_meta_export_refuses_what_the_format_cannot_say(tmp_path):
    from multitoken.errors import CheckpointError

    ckpt, _ = mtp_checkpoint(tmp_path, head_dim=24)
    with pytest.raises(CheckpointError, match="head_dim"):
        export(ckpt, "meta", tmp_path / "meta")
    assert not (tmp_path / "meta").exists()


def test_heads_that_read_the_next_token_are_refused_in_one_line(tmp_path):
    config = ModelConfig(vocab_size=256, d_model=32, n_layer=3, n_head=4, n_future=2, heads_read_next_token=True)
    ckpt = save_checkpoint(tmp_path / "run", 1, MTPModel(config), TrainConfig(model=config), ByteTokenizer(), {}, {}, 1)
    for fmt in ("hf", "meta"):
        with pytest.raises(CheckpointError, match="read the next token") as caught:
            export(ckpt, fmt, tmp_path / fmt)
        assert "\n" not in str(caught.value) and not (tmp_path / fmt).exists()
