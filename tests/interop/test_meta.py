"""Meta-format folders (params.json + consolidated.pth), checked against a reference forward written here from Meta's
published architecture: complex rotary, repeat_kv, trunk = layers[:-1], every head reads the trunk's output, one
shared norm and output."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import multitoken
from multitoken.interop.convert import convert
from multitoken.interop.meta import ffn_width

PARAMS = {"dim": 64, "n_layers": 5, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 80, "multiple_of": 32,
          "ffn_dim_multiplier": 1.3, "norm_eps": 1e-5, "rope_theta": 10000.0, "n_future_tokens": 3}


def random_meta_state(params: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dim, hd = params["dim"], params["dim"] // params["n_heads"]
    hidden = ffn_width(dim, params["multiple_of"], params["ffn_dim_multiplier"])
    n = params["n_future_tokens"]

    def w(*shape):
        return torch.randn(*shape, generator=g) / math.sqrt(shape[-1])

    def block(prefix):
        return {f"{prefix}.attention.wq.weight": w(params["n_heads"] * hd, dim),
                f"{prefix}.attention.wk.weight": w(params["n_kv_heads"] * hd, dim),
                f"{prefix}.attention.wv.weight": w(params["n_kv_heads"] * hd, dim),
                f"{prefix}.attention.wo.weight": w(dim, params["n_heads"] * hd),
                f"{prefix}.feed_forward.w1.weight": w(hidden, dim), f"{prefix}.feed_forward.w2.weight": w(dim, hidden),
                f"{prefix}.feed_forward.w3.weight": w(hidden, dim),
                f"{prefix}.attention_norm.weight": 1 + 0.3 * torch.randn(dim, generator=g),
                f"{prefix}.ffn_norm.weight": 1 + 0.3 * torch.randn(dim, generator=g)}

    state = {"tok_embeddings.weight": torch.randn(params["vocab_size"], dim, generator=g),
             "norm.weight": 1 + 0.3 * torch.randn(dim, generator=g), "output.weight": w(params["vocab_size"], dim)}
    for i in range(params["n_layers"] - n + 1):
        state.update(block(f"layers.{i}"))
    for j in range(n - 1):
        state.update(block(f"extra_heads.{j}"))
    return state


def reference_forward(state: dict, params: dict, tokens: torch.Tensor) -> torch.Tensor:
    """All heads' logits (B, T, n, V), following Meta's llama/model.py for multi-token prediction."""
    dim, n_heads, n_kv = params["dim"], params["n_heads"], params["n_kv_heads"]
    hd, eps, T = dim // n_heads, params["norm_eps"], tokens.shape[1]
    freqs = 1.0 / (params["rope_theta"] ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
    freqs_cis = torch.polar(torch.ones(T, hd // 2), torch.outer(torch.arange(T).float(), freqs))

    def norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    def rotary(x):  # (B, T, H, hd) as complex pairs of consecutive elements
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3)

    def repeat_kv(x, n_rep):
        B, S, H, D = x.shape
        return x[:, :, :, None, :].expand(B, S, H, n_rep, D).reshape(B, S, H * n_rep, D)

    def layer(p, x):
        B = x.shape[0]
        h = norm(x, state[f"{p}.attention_norm.weight"])
        q = (h @ state[f"{p}.attention.wq.weight"].T).view(B, T, n_heads, hd)
        k = (h @ state[f"{p}.attention.wk.weight"].T).view(B, T, n_kv, hd)
        v = (h @ state[f"{p}.attention.wv.weight"].T).view(B, T, n_kv, hd)
        q, k = rotary(q), rotary(k)
        k, v = repeat_kv(k, n_heads // n_kv), repeat_kv(v, n_heads // n_kv)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(2, 3) / math.sqrt(hd) + torch.full((T, T), float("-inf")).triu(1)
        out = (F.softmax(scores.float(), dim=-1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + out @ state[f"{p}.attention.wo.weight"].T
        h = norm(x, state[f"{p}.ffn_norm.weight"])
        ffn = (F.silu(h @ state[f"{p}.feed_forward.w1.weight"].T) * (h @ state[f"{p}.feed_forward.w3.weight"].T))
        return x + ffn @ state[f"{p}.feed_forward.w2.weight"].T

    n = params["n_future_tokens"]
    n_trunk = params["n_layers"] - n
    h = state["tok_embeddings.weight"][tokens]
    for i in range(n_trunk):
        h = layer(f"layers.{i}", h)
    heads = [f"layers.{n_trunk}"] + [f"extra_heads.{j}" for j in range(n - 1)]
    outs = torch.stack([layer(p, h) for p in heads], dim=-2)  # every head reads the trunk's output
    return norm(outs, state["norm.weight"]) @ state["output.weight"].T


def write_meta_folder(folder, params=PARAMS, state=None, shards: int = 1):
    folder.mkdir(parents=True)
    state = state if state is not None else random_meta_state(params)
    (folder / "params.json").write_text(json.dumps(params))
    if shards == 1:
        torch.save(state, folder / "consolidated.00.pth")
    else:  # model-parallel pieces as Meta's ranks save them: column-parallel rows, row-parallel columns
        for r in range(shards):
            piece = {}
            for name, t in state.items():
                if t.dim() == 1:
                    piece[name] = t.clone()
                else:
                    dim = 1 if name.endswith(("wo.weight", "w2.weight", "tok_embeddings.weight")) else 0
                    piece[name] = t.chunk(shards, dim=dim)[r].clone()
            torch.save(piece, folder / f"consolidated.{r:02d}.pth")
    return state


def sentencepiece_model(folder) -> None:
    """A small real SentencePiece BPE model, trained here (as Llama 2's tokenizer.model, with <s> and </s>)."""
    spm = pytest.importorskip("sentencepiece")
    import io

    words = ["def", "return", "self", "value", "print", "import", "class", "for", "while", "yield", "lambda"]
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(8)) for i in range(200)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=60,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, minloglevel=2)
    (folder / "tokenizer.model").write_bytes(model.getvalue())


@pytest.mark.parametrize("shards", [1, 2])
def test_meta_folder_matches_reference_forward(tmp_path, shards):
    state = write_meta_folder(tmp_path / "7B_200B_3", shards=shards)
    sentencepiece_model(tmp_path)  # beside the model folder, as in Meta's release
    convert(tmp_path / "7B_200B_3", tmp_path / "mt")
    model = multitoken.load_model(tmp_path / "mt")
    c = model.config
    assert (c.n_future, c.n_trunk_layers, c.kv_heads, c.ffn_dim) == (3, 2, 2, ffn_width(64, 32, 1.3))
    tokens = torch.randint(0, PARAMS["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference_forward(state, PARAMS, tokens)
        got = model(tokens, return_all_heads=True)
    assert got.shape == expected.shape == (2, 24, 3, PARAMS["vocab_size"])
    assert (expected - got).abs().max() < 1e-4


def test_meta_folder_tokenizer_and_speculative_decoding(tmp_path):
    from multitoken.decoding.generate import generate
    from multitoken.decoding.speculative import speculative_generate

    write_meta_folder(tmp_path / "model")
    sentencepiece_model(tmp_path)
    convert(tmp_path / "model", tmp_path / "mt")
    tokenizer = multitoken.load_tokenizer(tmp_path / "mt")
    assert tokenizer.kind == "sentencepiece" and tokenizer.bos_id == 1 and tokenizer.eot_id == 2
    ids = tokenizer.encode_prompt("def return self")
    assert ids[0] == 1 and tokenizer.decode(ids[1:]) == "def return self"
    model = multitoken.load_model(tmp_path / "mt")
    prompt = torch.tensor([ids])
    plain = generate(model, prompt, 24)
    fast, _ = speculative_generate(model, prompt, 24, draft_len=2)
    assert torch.equal(plain, fast)  # random heads rarely agree: exactness, not speed, is the point here


def test_load_model_reads_meta_and_hf_folders_directly(tmp_path):
    state = write_meta_folder(tmp_path / "meta")
    sentencepiece_model(tmp_path / "meta")
    model = multitoken.load_model(tmp_path / "meta")
    assert not model.training and model.config.n_future == 3
    tokens = torch.randint(0, 80, (1, 10))
    with torch.no_grad():
        assert (reference_forward(state, PARAMS, tokens) - model(tokens, return_all_heads=True)).abs().max() < 1e-4
