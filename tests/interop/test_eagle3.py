"""The drafter out as the engines' EAGLE-3 draft: the vLLM folder recomputed by an independent reference written from
the engines' arithmetic (docs/engines.md), and the llama.cpp GGUF read back with the gguf package's own reader."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from multitoken import ModelConfig, MTPModel, TrainConfig
from multitoken.data.tokenizer import ByteTokenizer
from multitoken.errors import CheckpointError
from multitoken.interop.export import export
from multitoken.training.checkpoint import save_checkpoint

SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 16}


def drafter_checkpoint(root, **overrides):
    values = dict(vocab_size=256, d_model=64, n_layer=6, n_head=4, n_kv_head=2, n_future=2, max_seq_len=64,
                  drafter="eagle3", draft_vocab=40, rope_theta=5000.0)
    values.update(overrides)
    config = ModelConfig(**values)
    torch.manual_seed(0)
    model = MTPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
        if config.draft_vocab:
            model.draft_ids.copy_(torch.randperm(config.vocab_size)[:config.draft_vocab].sort().values)
    return save_checkpoint(root / "run", 1, model, TrainConfig(model=config), ByteTokenizer(), {}, {}, 1), model


# --- an independent reference: the engines' arithmetic over the folder's own tensors and config --------------------

def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _inv_freq(cfg) -> torch.Tensor:
    hd = cfg["head_dim"]
    inv = 1.0 / cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd)
    s = cfg.get("rope_scaling")
    if not s:
        return inv
    low_wl = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wl = s["original_max_position_embeddings"] / s["high_freq_factor"]
    out = []
    for f in inv.tolist():  # transformers' llama3 rule, frequency by frequency
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(f)
        elif wl > low_wl:
            out.append(f / s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wl - s["low_freq_factor"]) / \
                (s["high_freq_factor"] - s["low_freq_factor"])
            out.append((1 - smooth) * f / s["factor"] + smooth * f)
    return torch.tensor(out)


def _rotate_half_rope(x, positions, inv_freq):  # x (T, H, hd), transformers' layout
    angles = positions[:, None].float() * inv_freq[None]
    cos, sin = torch.cat([angles.cos()] * 2, -1)[:, None], torch.cat([angles.sin()] * 2, -1)[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def reference_logits(folder, embeddings, features, next_tokens) -> torch.Tensor:
    """Target-vocabulary draft logits (T, V) of one sequence: features (T, 3d) at positions 0..T-1, next_tokens (T,)
    the token after each; causal attention over the sequence (the draft's own cache); -inf outside the draft
    vocabulary."""
    cfg = json.loads((folder / "config.json").read_text())
    w = load_file(folder / "model.safetensors")
    eps, H, Hkv, hd = cfg["rms_norm_eps"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    T = features.shape[0]
    g = features @ w["fc.weight"].T
    e = _rms(embeddings[next_tokens], w["midlayer.input_layernorm.weight"], eps)
    gn = _rms(g, w["midlayer.hidden_norm.weight"], eps)
    x = torch.cat([e, gn], -1)
    q = (x @ w["midlayer.self_attn.q_proj.weight"].T).view(T, H, hd)
    k = (x @ w["midlayer.self_attn.k_proj.weight"].T).view(T, Hkv, hd)
    v = (x @ w["midlayer.self_attn.v_proj.weight"].T).view(T, Hkv, hd)
    inv = _inv_freq(cfg)
    q, k = _rotate_half_rope(q, torch.arange(T), inv), _rotate_half_rope(k, torch.arange(T), inv)
    k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    attn = torch.einsum("hts,shd->thd", scores.softmax(-1), v).reshape(T, H * hd)
    r = attn @ w["midlayer.self_attn.o_proj.weight"].T + (gn if cfg["norm_before_residual"] else g)
    n = _rms(r, w["midlayer.post_attention_layernorm.weight"], eps)
    y = r + (F.silu(n @ w["midlayer.mlp.gate_proj.weight"].T) * (n @ w["midlayer.mlp.up_proj.weight"].T)) \
        @ w["midlayer.mlp.down_proj.weight"].T
    draft = _rms(y, w["norm.weight"], eps) @ w["lm_head.weight"].T  # (T, draft vocab)
    target_ids = torch.arange(cfg["draft_vocab_size"])
    if "d2t" in w:  # a draft vocabulary: offsets to the target's ids
        target_ids = target_ids + w["d2t"]
        assert torch.equal(w["t2d"].nonzero()[:, 0], target_ids.sort().values)
    else:
        assert cfg["draft_vocab_size"] == cfg["vocab_size"]
    return torch.full((T, cfg["vocab_size"]), float("-inf")).index_copy(1, target_ids, draft)


@pytest.mark.parametrize("overrides", [{}, {"rope_scaling": SCALING, "draft_vocab": 0, "drafter_layers": [4, 0, 2]}])
def test_the_vllm_folder_computes_what_the_drafter_computes(tmp_path, overrides):
    ckpt, model = drafter_checkpoint(tmp_path, **overrides)
    folder = export(ckpt, "eagle3", tmp_path / "draft")
    cfg = json.loads((folder / "config.json").read_text())
    c = model.config
    assert cfg["architectures"] == ["LlamaForCausalLMEagle3"] and cfg["num_hidden_layers"] == 1
    assert cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == list(c.drafter_feature_layers)
    assert cfg["draft_vocab_size"] == (c.draft_vocab or c.vocab_size) and cfg["target_hidden_size"] == c.d_model
    assert "embed_tokens.weight" not in load_file(folder / "model.safetensors")
    idx = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, features = model.trunk_features(idx)
        following = torch.cat([idx[:, 1:], torch.tensor([[7]])], dim=1)
        y = model.drafter(model.tok_embeddings(following), model.drafter.fc(features), *model.rope(20, None))
        ours = model.drafter.logits(y)[0]  # (T, draft vocab)
        full = torch.full((20, c.vocab_size), float("-inf")).index_copy(1, model.drafter_ids(), ours)
        reference = reference_logits(folder, model.tok_embeddings.weight, features[0], following[0])
    torch.testing.assert_close(reference, full, rtol=0, atol=1e-4)


def test_the_drafter_is_refused_where_it_cannot_go(tmp_path):
    ckpt, _ = drafter_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="needs --target"):
        export(ckpt, "eagle3-gguf", tmp_path / "d.gguf")
    with pytest.raises(CheckpointError, match="--target is for"):
        export(ckpt, "eagle3", tmp_path / "d", target=tmp_path / "t.gguf")
    plain = save_checkpoint(tmp_path / "plain", 1, MTPModel(ModelConfig(n_layer=4, n_future=1)),
                            TrainConfig(model=ModelConfig(n_layer=4, n_future=1)), ByteTokenizer(), {}, {}, 1)
    with pytest.raises(CheckpointError, match="no drafter"):
        export(plain, "eagle3", tmp_path / "d")
    assert not (tmp_path / "d").exists() and not (tmp_path / "d.gguf").exists()
    hf = export(ckpt, "hf", tmp_path / "hf")  # the target goes out as before, without the drafter
    assert not any(k.startswith("drafter") for k in load_file(hf / "model.safetensors"))


def _target_gguf(path, config: ModelConfig, vocab_size: int | None = None) -> None:
    """A target GGUF's metadata as llama.cpp writes it (no tensors: the draft file reads only these)."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.n_trunk_layers + 1)
    writer.add_embedding_length(config.d_model)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    tokens = [f"t{i}" for i in range(vocab_size or config.vocab_size)]
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges(["t 1", "t 2"])
    writer.add_bos_token_id(3)
    writer.add_eos_token_id(5)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_the_llama_cpp_file_reads_back_to_the_same_tensors_and_metadata(tmp_path):
    gguf = pytest.importorskip("gguf")
    ckpt, model = drafter_checkpoint(tmp_path)
    _target_gguf(tmp_path / "target.gguf", model.config)
    out = export(ckpt, "eagle3-gguf", tmp_path / "draft.gguf", target=tmp_path / "target.gguf")
    reader, target = gguf.GGUFReader(str(out)), gguf.GGUFReader(str(tmp_path / "target.gguf"))
    value = lambda r, key: r.fields[key].contents()  # noqa: E731
    c = model.config
    assert value(reader, "general.architecture") == "eagle3" and value(reader, "eagle3.block_count") == 1
    assert value(reader, "eagle3.target_layers") == list(c.drafter_feature_layers)
    assert value(reader, "eagle3.target_hidden_size") == c.d_model
    assert value(reader, "eagle3.rope.freq_base") == c.rope_theta
    assert value(reader, "eagle3.norm_before_residual") is False
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.token_type"):
        assert value(reader, key) == value(target, key)
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    d = model.drafter
    ours = {"fc.weight": d.fc.weight, "blk.0.attn_q.weight": d.attention.wq.weight,  # interleaved, as llama.cpp's
            "blk.0.attn_k.weight": d.attention.wk.weight, "blk.0.attn_norm_2.weight": d.hidden_norm.weight,
            "blk.0.attn_norm.weight": d.input_norm.weight, "blk.0.ffn_down.weight": d.feed_forward.w2.weight,
            "output.weight": d.output.weight, "output_norm.weight": d.norm.weight}
    for name, w in ours.items():
        assert np.array_equal(tensors[name], w.detach().numpy()), name
    assert np.array_equal(tensors["d2t"], model.draft_ids.numpy())  # absolute target ids
    assert "token_embd.weight" not in tensors
    _target_gguf(tmp_path / "other.gguf", model.config, vocab_size=300)
    with pytest.raises(CheckpointError, match="not this drafter's target"):
        export(ckpt, "eagle3-gguf", tmp_path / "draft2.gguf", target=tmp_path / "other.gguf")
    assert not (tmp_path / "draft2.gguf").exists()


def test_the_user_hears_which_engines_run_drafts_beside_their_family():
    from multitoken.interop.eagle3 import engine_note

    llama = ModelConfig(n_layer=6, n_future=1, drafter="eagle3")
    qwen2 = ModelConfig(n_layer=6, n_future=1, drafter="eagle3", qkv_bias=True)
    assert engine_note(llama, "eagle3") is None and engine_note(llama, "eagle3-gguf") is None
    assert engine_note(qwen2, "eagle3") is None
    assert "llama.cpp runs EAGLE-3 drafts beside llama, mistral, qwen3 targets, not qwen2" in \
        engine_note(qwen2, "eagle3-gguf")
