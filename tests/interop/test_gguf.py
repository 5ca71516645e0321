"""GGUF files (written here with the gguf package's own writer, as llama.cpp lays them out): multitoken's converted
logits and tokenizer equal transformers' GGUF loader's on the same file, and bad files get one line and no output."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import multitoken
from multitoken.errors import CheckpointError
from multitoken.interop.convert import convert
from multitoken.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="transformers needs Python >= 3.11")
gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers' GGUF loader needs it

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TEXT = "def add(x, y):\n    return x + y\n\nclass Point:\n    pass\n" * 20


def byte_level_bpe(vocab_size: int):
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                            "<|im_end|>"],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    return tok


def llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """transformers' q/k rows to llama.cpp's (convert_hf_to_gguf.py's permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


LAYER_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
               "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
GEMMA_NORMS = {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
               "post_feedforward_layernorm": "post_ffw_norm"}


def write_gguf(path, model, tok, qtype: str, tied: bool, arch: str = "llama", with_tokenizer: bool = True) -> None:
    """model's weights as llama.cpp's convert_hf_to_gguf.py lays them out for arch: q/k rows permuted to
    interleaved pairs for llama only, Gemma's norm gains stored as 1 + w, its four norms under their own names."""
    c = model.config
    q = gguf.GGMLQuantizationType[qtype]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    rope = c.rope_parameters if getattr(c, "rope_parameters", None) else {"rope_theta": c.rope_theta}
    writer.add_rope_freq_base(rope.get("full_attention", rope)["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if arch == "gemma3":
        writer.add_sliding_window(c.sliding_window)
    if with_tokenizer:
        writer.add_vocab_size(c.vocab_size)
        write_tokenizer(writer, tok, arch)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    layer = {**LAYER_NAMES, **GEMMA_NORMS} if arch == "gemma3" else LAYER_NAMES
    for name, w in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        if name.startswith("model.layers."):
            i, rest = name.split(".")[2], name.split(".", 3)[3]
            part, kind = rest.rsplit(".", 1)
            out = f"blk.{i}.{layer[part]}.{kind}"
        else:
            out = names[name]
        if arch == "llama" and "q_proj" in name:
            w = llama_cpp_permute(w, c.num_attention_heads)
        elif arch == "llama" and "k_proj" in name:
            w = llama_cpp_permute(w, c.num_key_value_heads)
        if arch == "gemma3" and name.endswith("norm.weight"):
            w = w + 1
        data = w.float().numpy()
        if data.ndim == 2:  # norms and biases stay F32, as llama.cpp keeps them
            writer.add_tensor(out, gguf.quants.quantize(data, q), raw_dtype=q)
        else:
            writer.add_tensor(out, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_tokenizer(writer, tok, arch: str) -> None:
    """The tokenizer's metadata as llama.cpp's converter writes it (gpt2-style BPE, ChatML)."""
    import json

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m
                             for m in json.loads(tok.to_str())["model"]["merges"]])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(vocab["<|im_end|>"])
    if arch == "gemma3":  # llama.cpp names Gemma's <end_of_turn> as the end-of-turn token
        writer.add_eot_token_id(vocab["<|im_start|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_bpe(320)


def make_gguf(folder, tokenizer, qtype="F32", tied=False):
    from tests.interop.conftest import make_hf_model

    folder.mkdir(parents=True, exist_ok=True)
    model = make_hf_model(folder / "hf", vocab_size=tokenizer.get_vocab_size(), num_key_value_heads=2,
                          tie_word_embeddings=tied)
    path = folder / f"model-{qtype}.gguf"
    write_gguf(path, model, tokenizer, qtype, tied)
    return path


@pytest.mark.parametrize("qtype,tied", [("F32", False), ("F16", True), ("BF16", False), ("Q8_0", False),
                                        ("Q4_0", True), ("Q4_1", False)])
def test_gguf_logits_equal_transformers_gguf_loader(tmp_path, tokenizer, qtype, tied):
    path = make_gguf(tmp_path, tokenizer, qtype, tied)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
    convert(path, tmp_path / "mt")
    model, _, tok = load_checkpoint(tmp_path / "mt")
    assert model.config.tie_embeddings == tied
    idx = torch.randint(0, tokenizer.get_vocab_size(), (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (reference(idx).logits - model(idx)).abs().max().item() < 1e-4
    # load_model reads the file directly, with the same weights
    direct = multitoken.load_model(path)
    with torch.no_grad():
        assert torch.equal(direct(idx), model(idx))


def test_gguf_tokenizer_and_chat_template_equal_transformers(tmp_path, tokenizer):
    from multitoken.data.chat import encode_chat

    path = make_gguf(tmp_path, tokenizer)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    convert(path, tmp_path / "mt")
    tok = load_checkpoint(tmp_path / "mt")[2]
    for text in ["def add(x, y):\n    return x + y", "  spaces\tand tabs\n\n", "ünïcödé 123 !?"]:
        assert tok.encode_prompt(text) == reference(text, add_special_tokens=True).input_ids
        assert tok.decode(tok.encode(text)) == text
    messages = [{"role": "user", "content": "add two numbers"}]
    assert encode_chat(tok, messages) == reference.apply_chat_template(messages, add_generation_prompt=True,
                                                                       tokenize=True, return_dict=False)
    assert tok.eot_token == "<|im_end|>"


def test_bad_gguf_files_get_one_line_and_nothing_written(tmp_path, tokenizer):
    path = make_gguf(tmp_path, tokenizer, "Q8_0")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    for bad, match in ((truncated, "not a readable GGUF|truncated"), (garbage, "not a readable GGUF")):
        with pytest.raises(CheckpointError, match=match):
            convert(bad, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    other = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(other), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="architecture 'mamba' is not supported"):
        convert(other, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_generate_chat_stop_and_their_bad_inputs(tmp_path, tokenizer, capsys):
    """generate --chat renders the template and prints only the answer, ending at end-of-sequence; --stop cuts the
    text; a model without a template, an empty stop string or --system without --chat get one line."""
    from multitoken.data.chat import encode_chat
    from multitoken.decoding.generate import generate
    from tests.cli.conftest import assert_one_line_error, run_cli

    convert(make_gguf(tmp_path, tokenizer), tmp_path / "mt")
    model, _, tok = load_checkpoint(tmp_path / "mt")
    ids = encode_chat(tok, [{"role": "user", "content": "add two"}])
    expected = generate(model, torch.tensor([ids]), 12, temperature=0.0)[0].tolist()
    code, out, err = run_cli(capsys, "generate", "--ckpt", tmp_path / "mt", "--chat", "--prompt", "add two",
                             "--temperature", 0, "--max-new-tokens", 12, "--ignore-eos")
    assert code == 0 and out == tok.decode(expected) + "\n" and "12 tokens" in err
    # streamed (the default: written as tokens are accepted) or all at once: the same text
    assert run_cli(capsys, "generate", "--ckpt", tmp_path / "mt", "--chat", "--prompt", "add two", "--temperature", 0,
                   "--max-new-tokens", 12, "--ignore-eos", "--stream", "false")[1] == out
    code, out, _ = run_cli(capsys, "generate", "--ckpt", tmp_path / "mt", "--prompt", "def", "--temperature", 0,
                           "--max-new-tokens", 12, "--stop", '["a"]')
    assert code == 0 and "a" not in out[len("def"):]
    code, _, err = run_cli(capsys, "generate", "--ckpt", tmp_path / "mt", "--prompt", "x", "--stop", '[""]')
    assert_one_line_error(code, err, "--stop has an empty string")
    code, _, err = run_cli(capsys, "generate", "--ckpt", tmp_path / "mt", "--prompt", "x", "--system", "be brief")
    assert_one_line_error(code, err, "--system only applies with --chat")
    tok.chat_template = None
    tok.save(tmp_path / "mt")  # the same checkpoint without a template
    code, _, err = run_cli(capsys, "generate", "--ckpt", tmp_path / "mt", "--prompt", "x", "--chat")
    assert_one_line_error(code, err, "no chat template")


def test_chat_keeps_history_and_answers_as_generate(tmp_path, tokenizer, capsys, monkeypatch):
    """`multitoken chat` driven through stdin: each answer is plain greedy decoding of the whole conversation so
    far (the earlier answers in it), with speculative decoding when the model has heads; /reset forgets."""
    import io

    from multitoken.data.chat import encode_chat
    from multitoken.decoding.generate import generate
    from tests.cli.conftest import assert_one_line_error, run_cli

    convert(make_gguf(tmp_path, tokenizer), tmp_path / "mt")
    model, _, tok = load_checkpoint(tmp_path / "mt")
    stop = torch.tensor([tok.eot_id])

    def answer(messages):
        new = generate(model, torch.tensor([encode_chat(tok, messages)]), 10, temperature=0.0, stop_ids=stop)[0]
        ids = new.tolist()
        return tok.decode(ids[:ids.index(tok.eot_id)] if tok.eot_id in ids else ids)

    first = answer([{"role": "user", "content": "add"}])
    history = [{"role": "user", "content": "add"}, {"role": "assistant", "content": first},
               {"role": "user", "content": "class"}]
    expected = [first, answer(history), answer([{"role": "user", "content": "class"}])]
    monkeypatch.setattr("sys.stdin", io.StringIO("add\nclass\n/reset\nclass\n"))
    code, out, err = run_cli(capsys, "chat", "--ckpt", tmp_path / "mt", "--max-new-tokens", 10)
    assert code == 0 and out == "".join(a + "\n" for a in expected) and "conversation reset" in err
    tok.chat_template = None
    tok.save(tmp_path / "mt")
    code, _, err = run_cli(capsys, "chat", "--ckpt", tmp_path / "mt")
    assert_one_line_error(code, err, "no chat template")


def write_sentencepiece_vocab(writer) -> list[str]:
    """A small SentencePiece-style (`llama`) vocabulary as llama.cpp writes one: <unk> <s> </s>, the 256 byte
    pieces, then '▁'-spelled pieces scored so that longer (later-merged) pieces score lower."""
    words = ["def", "add", "return", "class", "point", "pass", "self", "x", "y"]
    pieces = ["▁"] + sorted({c for w in words for c in w})
    for w in words:  # every prefix of "▁word", so each piece is a merge of two earlier ones
        spelled = "▁" + w
        pieces += [spelled[:i] for i in range(2, len(spelled) + 1) if spelled[:i] not in pieces]
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *pieces]
    types = [2, 3, 3, *[6] * 256, *[1] * len(pieces)]
    scores = [0.0, 0.0, 0.0, *[0.0] * 256, *[-float(i) for i in range(len(pieces))]]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    return tokens


def test_sentencepiece_style_gguf_tokenizer_equals_transformers(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "sp.gguf"), "llama")
    tokens = write_sentencepiece_vocab(writer)
    for key, value in (("block_count", 1), ("embedding_length", 32), ("feed_forward_length", 64),
                       ("attention.head_count", 4), ("context_length", 64)):
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(tokens), 32), "output_norm.weight": (32,), "blk.0.attn_norm.weight": (32,),
              "blk.0.ffn_norm.weight": (32,), "blk.0.attn_q.weight": (32, 32), "blk.0.attn_k.weight": (32, 32),
              "blk.0.attn_v.weight": (32, 32), "blk.0.attn_output.weight": (32, 32),
              "blk.0.ffn_gate.weight": (64, 32), "blk.0.ffn_up.weight": (64, 32), "blk.0.ffn_down.weight": (32, 64)}
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="sp.gguf")
    convert(tmp_path / "sp.gguf", tmp_path / "mt")
    tok = load_checkpoint(tmp_path / "mt")[2]
    for text in ["def add self", "class point pass", "return x y", "unknown wörds\n"]:
        assert tok.encode_prompt(text) == reference(text).input_ids, text
        assert tok.decode(tok.encode(text)) == reference.decode(reference(text, add_special_tokens=False).input_ids)


# llama.cpp's own Gemma 3 layout: every 6th layer global (7 layers: the 6th), head_dim = query_pre_attn_scalar.
GGUF_FAMILIES = {
    "qwen2": dict(num_key_value_heads=2),
    # transformers' GGUF loader leaves Qwen3's head_dim at its default, 128; here that is not hidden / heads
    "qwen3": dict(num_key_value_heads=2, head_dim=128),
    "gemma3": dict(num_hidden_layers=7, num_key_value_heads=1, num_attention_heads=2, head_dim=256,
                   query_pre_attn_scalar=256, sliding_window=8),
}


@pytest.mark.parametrize("arch,qtype", [("qwen2", "F32"), ("qwen2", "Q8_0"), ("qwen3", "F32"), ("qwen3", "Q4_0"),
                                        ("gemma3", "F32"), ("gemma3", "Q8_0")])
def test_family_gguf_logits_equal_transformers_gguf_loader(tmp_path, tokenizer, arch, qtype):
    from tests.interop.conftest import make_hf_model

    tied = arch == "gemma3"
    hf_model = make_hf_model(tmp_path / "hf", arch, vocab_size=tokenizer.get_vocab_size(),
                             tie_word_embeddings=tied, **GGUF_FAMILIES[arch])
    path = tmp_path / f"{arch}-{qtype}.gguf"
    write_gguf(path, hf_model, tokenizer, qtype, tied, arch)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
    assert type(reference).__name__ == type(hf_model).__name__
    convert(path, tmp_path / "mt")
    model, _, tok = load_checkpoint(tmp_path / "mt")
    vocab = tokenizer.get_vocab()
    assert tok.stop_ids == [vocab["<|im_end|>"], *([vocab["<|im_start|>"]] if arch == "gemma3" else [])]
    idx = torch.randint(0, tokenizer.get_vocab_size(), (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (reference(idx).logits - model(idx)).abs().max().item() < 1e-4
        if qtype == "F32":  # unquantized, it is the Hugging Face model itself
            assert (hf_model(idx).logits - model(idx)).abs().max().item() < 1e-4
        # load_model reads the file directly: transformers' logits, and the very weights convert writes
        direct = multitoken.load_model(path)
        assert (reference(idx).logits - direct(idx)).abs().max().item() < 1e-4
        assert torch.equal(direct(idx), model(idx))
