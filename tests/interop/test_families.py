"""Model families beyond Llama (Qwen2, Qwen3, Gemma 3, a windowed Mistral), each the one block with switches:
converted logits and greedy tokens equal transformers', export gives transformers' own class back, and each switch
is needed (turned off, the logits move)."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

import multitoken
from multitoken.checkpoint import load_checkpoint, read_weights
from multitoken.interop.convert import convert
from multitoken.interop.export import export
from tests.interop.conftest import VOCAB, make_hf_model, transformers_greedy

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="transformers needs Python >= 3.11")
transformers = pytest.importorskip("transformers")

WINDOW = 8  # shorter than every test sequence below, so that the window layers' mask matters
GEMMA_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]
FAMILIES = {
    "qwen2": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True)),  # Qwen2.5-0.5B style
    "qwen3": ("qwen3", dict(num_key_value_heads=2, head_dim=24)),
    # Window and global layers interleaved, head 1's layer (the last) a window layer; a query scale that is not
    # 1/sqrt(head_dim); a rotary base of its own for the window layers.
    "gemma3": ("gemma3", dict(num_hidden_layers=4, num_key_value_heads=2, head_dim=16, sliding_window=WINDOW,
                              layer_types=GEMMA_TYPES, query_pre_attn_scalar=20, max_position_embeddings=128)),
    "qwen3-window": ("qwen3", dict(num_hidden_layers=4, num_key_value_heads=2, use_sliding_window=True,
                                   sliding_window=WINDOW, max_window_layers=2)),
    "mistral-window": ("mistral", dict(num_key_value_heads=2, sliding_window=WINDOW)),
}
# The switches each variant turns on, each of which must change the logits when turned off.
SWITCHES = {
    "qwen2": dict(qkv_bias=False),
    "qwen3": dict(qk_norm=False),
    "gemma3": dict(norm_unit_offset=False, sandwich_norm=False, scale_embeddings=False, activation="silu",
                   attention_scale=None, sliding_window=None, rope_local_theta=None, qk_norm=False),
    "qwen3-window": dict(sliding_window=None, qk_norm=False),
    "mistral-window": dict(sliding_window=None),
}


def convert_family(name: str, root):
    arch, overrides = FAMILIES[name]
    reference = make_hf_model(root / "hf", arch, **overrides)
    convert(root / "hf", root / "mt")
    return reference, load_checkpoint(root / "mt")[0]


@pytest.fixture(scope="module", params=list(FAMILIES))
def converted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    reference, model = convert_family(request.param, root)
    return request.param, reference, model, root


def test_logits_equal_transformers(converted):
    name, reference, model, _ = converted
    idx = torch.randint(0, VOCAB, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (reference(idx).logits - model(idx)).abs().max().item() < 1e-4, name


def test_greedy_tokens_equal_transformers_generate(converted):
    from multitoken.decoding.generate import generate, pad_prompts

    name, reference, model, _ = converted
    prompt = torch.randint(3, VOCAB, (1, 9), generator=torch.Generator().manual_seed(2))
    expected = transformers_greedy(reference, prompt, 32)
    assert torch.equal(generate(model, prompt, 32, temperature=0.0), expected), name
    # The same row in a ragged batch (rows at their own positions: the per-row mask path)
    padded, lengths = pad_prompts([[5, 6, 7], prompt[0].tolist()])
    assert torch.equal(generate(model, padded, 32, lengths=lengths)[1], expected[0]), name


def test_export_gives_the_family_back_and_convert_is_bit_identical(converted, tmp_path):
    name, reference, model, root = converted
    export(root / "mt", "hf", tmp_path / "hf")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(back).__name__ == type(reference).__name__
    idx = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (back(idx).logits - model(idx)).abs().max().item() < 1e-4, name
    convert(tmp_path / "hf", tmp_path / "again")
    before, after = read_weights(root / "mt"), read_weights(tmp_path / "again")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert load_checkpoint(tmp_path / "again")[0].config == model.config


def test_each_switch_is_needed(converted):
    """Negative controls: each switch of the family, turned off on the same weights, moves the logits by > 1e-3."""
    name, reference, model, _ = converted
    idx = torch.randint(0, VOCAB, (1, 48), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference(idx).logits
        for switch, off in SWITCHES[name].items():
            config = dataclasses.replace(model.config, **{switch: off},
                                         **({"sliding_layers": None} if switch == "sliding_window" else {}))
            with torch.device("meta"):
                keep = multitoken.MTPModel(config).state_dict().keys()
            state = {k: v for k, v in model.state_dict().items() if k in keep}
            moved = (expected - multitoken.MTPModel.from_state_dict(config, state)(idx)).abs().max().item()
            assert moved > 1e-3, f"{name}: {switch} = {off!r} leaves the logits as they were ({moved:.1e})"


def test_model_folder_gains_no_class_per_family():
    import inspect

    import multitoken.model.layers as layers
    import multitoken.model.mtp as mtp

    classes = {name for module in (layers, mtp) for name, obj in vars(module).items()
               if inspect.isclass(obj) and obj.__module__ == module.__name__}
    assert classes == {"RMSNorm", "Attention", "FeedForward", "TransformerBlock", "MTPModel"}


def add_heads(root):
    """The converted model at root/mt given 2 extra heads by `train --init-from --freeze base` on text of its own
    words."""
    from multitoken.config import DataConfig
    from multitoken.training.trainer import train
    from tests.conftest import tiny_model_config, tiny_train_config

    corpus = root / "corpus"
    corpus.mkdir()
    rng = torch.Generator().manual_seed(5)
    for i in range(4):
        words = torch.randint(3, VOCAB, (400,), generator=rng)
        (corpus / f"doc{i}.txt").write_text(" ".join(f"w{w}" for w in words.tolist()))
    train(tiny_train_config(corpus, root / "heads", init_from=str(root / "mt"), freeze="base", seq_len=16,
                            max_steps=4, model=tiny_model_config(n_future=3),
                            data=DataConfig(path=[str(corpus)], tokenizer=str(root / "mt"))))
    return load_checkpoint(root / "heads")[0]


@pytest.fixture(scope="module")
def with_heads(converted):
    name, _, model, root = converted
    return name, model, add_heads(root)


def test_frozen_base_heads_decode_exactly_what_the_model_says(with_heads):
    from multitoken.decoding.generate import generate, pad_prompts
    from multitoken.decoding.speculative import speculative_generate
    from multitoken.decoding.tree import DraftTree

    name, source, model = with_heads
    idx = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(source(idx), model(idx)), name  # head 1 as it was, bit for bit
    padded, lengths = pad_prompts([[5, 6, 7, 8, 9, 10, 11, 12, 13], [14, 15, 16], [17, 18, 19, 20, 21]])
    for rows in (padded[:1], padded):  # batch 1, then a ragged batch
        row_lengths = lengths[:rows.shape[0]]
        expected = generate(source, rows, 24, lengths=row_lengths)
        assert torch.equal(generate(model, rows, 24, lengths=row_lengths), expected), name
        for tree in (None, DraftTree.parse("(0,), (1,), (0, 0), (0, 1)")):
            fast, _ = speculative_generate(model, rows, 24, lengths=row_lengths, tree=tree)
            assert torch.equal(fast, expected), (name, tree)
        unfused, _ = speculative_generate(model, rows, 24, lengths=row_lengths, fused=False)
        assert torch.equal(unfused, expected), name


@pytest.mark.slow
def test_frozen_base_heads_decode_exactly_when_compiled(tmp_path):
    """Compiled plain and tree steps on Gemma 3, the block with every switch (windows, own rotary base for the
    window layers, q/k norms, sandwich norms, GeGLU, a query scale)."""
    from multitoken.decoding.generate import generate, pad_prompts
    from multitoken.decoding.speculative import speculative_generate
    from multitoken.decoding.tree import DraftTree

    _, source = convert_family("gemma3", tmp_path)
    model = add_heads(tmp_path)
    padded, lengths = pad_prompts([[5, 6, 7, 8, 9, 10, 11, 12, 13], [14, 15, 16]])
    expected = generate(source, padded, 20, lengths=lengths)
    assert torch.equal(generate(model, padded, 20, lengths=lengths, compile=True), expected)
    fast, _ = speculative_generate(model, padded, 20, lengths=lengths, compile=True,
                                   tree=DraftTree.parse("(0,), (1,), (0, 0)"))
    assert torch.equal(fast, expected)


def test_info_names_the_block(converted, capsys):
    from multitoken.cli.main import main

    name, _, _, root = converted
    capsys.readouterr()
    assert main(["info", "--ckpt", str(root / "mt")]) == 0
    block = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("block"))
    expected = {"qwen2": "q/k/v biases", "qwen3": "q/k norms", "qwen3-window": "window 8 on 2 of 4 layers",
                "mistral-window": "window 8 on every layer",
                "gemma3": "(1 + w) norms, sandwich norms, scaled embeddings, gelu_tanh feed-forward"}[name]
    assert expected in block, block
