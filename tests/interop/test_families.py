"""Model families beyond Llama (Qwen2, Qwen3, Gemma 3, a windowed Mistral), each the one block with switches:
converted (or `load_model`ed) logits and greedy tokens equal transformers', export gives transformers' own class back,
each switch is needed (turned off, the logits move), and extra heads, copies of the family's last layer, decode
exactly and travel through export and back bit for bit."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

import multitoken
from multitoken.checkpoint import load_checkpoint, read_weights, resolve_checkpoint
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
# The per-layer tensors each variant's switches add to a Llama block: every head must carry them.
SWITCH_TENSORS = {
    "qwen2": {"attention.wq.bias", "attention.wk.bias", "attention.wv.bias"},
    "qwen3": {"attention.q_norm.weight", "attention.k_norm.weight"},
    "gemma3": {"attention.q_norm.weight", "attention.k_norm.weight", "post_attention_norm.weight",
               "post_ffn_norm.weight"},
    "qwen3-window": {"attention.q_norm.weight", "attention.k_norm.weight"},
    "mistral-window": set(),
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


def assert_export_round_trip(name: str, reference, model, ckpt: Path, out: Path, seed: int) -> dict:
    """`export --format hf` of ckpt gives the reference's own transformers class, whose logits are model's head 1
    (< 1e-4), and converting the export back gives every tensor bit for bit and the same config. Returns ckpt's
    weights."""
    export(ckpt, "hf", out / "hf")
    back = transformers.AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    assert type(back).__name__ == type(reference).__name__
    idx = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert (back(idx).logits - model(idx)).abs().max().item() < 1e-4, name
    convert(out / "hf", out / "again")
    before, after = read_weights(resolve_checkpoint(ckpt)), read_weights(out / "again")
    assert before.keys() == after.keys(), name
    for key, value in before.items():
        assert torch.equal(value, after[key]), (name, key)
    assert load_checkpoint(out / "again")[0].config == model.config
    return before


def test_export_gives_the_family_back_and_convert_is_bit_identical(converted, tmp_path):
    name, reference, model, root = converted
    assert_export_round_trip(name, reference, model, root / "mt", tmp_path, seed=3)


def test_load_model_reads_the_family_folder(converted):
    name, reference, model, root = converted
    loaded = multitoken.load_model(root / "hf")
    idx = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert (reference(idx).logits - loaded(idx)).abs().max().item() < 1e-4, name
        assert torch.equal(loaded(idx), model(idx)), name  # the very weights that convert writes


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


def test_new_heads_start_as_copies_of_the_last_layer(converted):
    """Surgery (`train --init-from` with more heads) starts every new head as the family's last layer, tensor for
    tensor, its biases, q/k norms and sandwich norms included: each head then says what head 1 says."""
    from multitoken.data.tokenizer import load_tokenizer
    from multitoken.training.surgery import init_from_checkpoint, model_config_for_init

    name, _, source, root = converted
    model = multitoken.MTPModel(model_config_for_init(str(root / "mt"), multitoken.config.ModelConfig(n_future=3))).eval()
    init_from_checkpoint(model, str(root / "mt"), load_tokenizer(root / "mt"))
    last = source.layers[-1].state_dict()
    assert SWITCH_TENSORS[name] <= last.keys(), name
    assert len(model.extra_heads) == 2
    for j, head in enumerate(model.extra_heads):
        copy = head.state_dict()
        assert copy.keys() == last.keys(), (name, j)
        for key, value in last.items():
            assert torch.equal(copy[key], value), (name, j, key)
    idx = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        logits = model(idx, return_all_heads=True)  # (B, T, 3, V)
    for j in (1, 2):  # the same block switches and window as head 1's layer, not only the same tensors
        assert torch.equal(logits[:, :, j], logits[:, :, 0]), (name, j)


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


def test_export_with_heads_gives_head1_to_transformers_and_every_head_back(converted, with_heads, tmp_path):
    """A family model given trained extra heads: transformers' own class on the export is head 1, and converting the
    export back gives every tensor bit for bit, the extra heads' biases, q/k norms and sandwich norms included."""
    import json

    name, reference, _, root = converted
    _, _, model = with_heads
    before = assert_export_round_trip(name, reference, model, root / "heads", tmp_path, seed=9)
    assert json.loads((tmp_path / "hf" / "mtp_heads.json").read_text())["n_future"] == 3
    assert {f"extra_heads.{j}.{t}" for j in (0, 1) for t in SWITCH_TENSORS[name]} <= before.keys(), name
    # Trained apart, so that heads written in each other's place would have shown in the round trip
    assert not torch.equal(before["extra_heads.0.attention.wq.weight"], before["extra_heads.1.attention.wq.weight"])


RAGGED = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [14, 15, 16]]


def assert_compiled_speculative_is_greedy(source, model, tree):
    """Compiled speculative decoding of a ragged batch with model's heads (tree None: the chain of their 2 drafts)
    gives the eager source model's greedy tokens, and accepts at each depth as many drafts as eager decoding (the
    compiled fused heads draft what the heads say). Returns the compiled call's statistics."""
    from multitoken.decoding.generate import generate, pad_prompts
    from multitoken.decoding.speculative import speculative_generate
    from multitoken.decoding.tree import DraftTree

    padded, lengths = pad_prompts(RAGGED)
    fast, stats = speculative_generate(model, padded, 20, lengths=lengths, compile=True, tree=tree)
    assert stats.compile_seconds > 0 and stats.tree_nodes == (tree or DraftTree.chain(2)).num_nodes  # compiled, tree
    assert torch.equal(fast, generate(source, padded, 20, lengths=lengths))
    # A chain's reference runs each head through its own layer (fused=False); a tree's, the same steps eagerly.
    _, eager = speculative_generate(model, padded, 20, lengths=lengths, tree=tree, fused=tree is not None)
    assert stats.accepted_per_position == eager.accepted_per_position
    return stats


# Every compiled shape (batch size, draft tree) costs about a minute on a 2-core CPU, so the two families that
# together hold every switch share the cases out: three shapes in all, each case once.
@pytest.mark.slow
def test_frozen_base_heads_decode_exactly_when_compiled(tmp_path, quick_compile):
    """Compiled plain steps on one row and tree steps on a ragged batch, on Gemma 3, the block with every switch but
    q/k/v biases (windows, own rotary base for the window layers, q/k norms, sandwich norms, GeGLU, a query scale)."""
    from multitoken.decoding.generate import generate
    from multitoken.decoding.static import total_compile_seconds
    from multitoken.decoding.tree import DraftTree

    _, source = convert_family("gemma3", tmp_path)
    model = add_heads(tmp_path)
    prompt = torch.tensor(RAGGED[:1])
    assert torch.equal(generate(model, prompt, 20, compile=True), generate(source, prompt, 20))
    assert total_compile_seconds(model) > 0  # the step was compiled, not run eagerly
    stats = assert_compiled_speculative_is_greedy(source, model, DraftTree.parse("(0,), (1,), (0, 0)"))
    assert sum(stats.accepted_per_position) > 0  # the accepted paths' caches are gathered, not only rejections


@pytest.mark.slow
def test_qkv_biases_decode_exactly_when_compiled(tmp_path, quick_compile):
    """Compiled chain steps on a ragged batch on Qwen2: its q/k/v biases, the switch Gemma 3 lacks, through the
    compiled trunk and the compiled fused extra heads."""
    _, source = convert_family("qwen2", tmp_path)
    model = add_heads(tmp_path)
    # Head 2 made head 1's copy again: this model's greedy continuations repeat one token, so it is always right,
    # while the trained head 3 is right only at times, and steps keep one draft or both.
    with torch.no_grad():
        model.extra_heads[0].load_state_dict(model.layers[-1].state_dict())
    stats = assert_compiled_speculative_is_greedy(source, model, None)
    accepted, attempted = stats.accepted_per_position, stats.attempted_per_position
    assert accepted[0] > 0 and 0 < accepted[1] < attempted[1], (accepted, attempted)


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
