"""Tiny model folders in the formats people bring: Hugging Face Llama/Mistral built with transformers, and Meta's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

VOCAB = 96


def word_level_tokenizer(vocab_size: int = VOCAB):
    """A small tokenizers.Tokenizer with Llama's specials (<unk> 0, <s> 1, </s> 2) that puts <s> before every text,
    as Llama's does."""
    tk = pytest.importorskip("tokenizers")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = tk.Tokenizer(tk.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
    tok.post_processor = tk.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.decoder = tk.decoders.WordPiece(prefix="##")  # joins words with spaces
    return tok


def save_hf_tokenizer(folder: Path) -> None:
    word_level_tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "bos_token": "<s>"}))


FAMILY_CLASSES = {"llama": ("LlamaForCausalLM", "LlamaConfig"), "mistral": ("MistralForCausalLM", "MistralConfig"),
                  "qwen2": ("Qwen2ForCausalLM", "Qwen2Config"), "qwen3": ("Qwen3ForCausalLM", "Qwen3Config"),
                  "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig")}


def make_hf_model(folder: Path, arch: str = "llama", seed: int = 0, shard_size: str | None = None, **overrides):
    """A random tiny model of a transformers family (llama, mistral, qwen2, qwen3, gemma3) saved with
    save_pretrained, plus a tokenizer."""
    transformers = pytest.importorskip("transformers")
    values = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1,
                  eos_token_id=2)
    values.update(overrides)
    torch.manual_seed(seed)
    model_class, config_class = FAMILY_CLASSES[arch]
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**values))
    with torch.no_grad():  # norms away from 1 and biases away from 0, so that a misplaced one shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.5)
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(folder, **kwargs)
    save_hf_tokenizer(folder)
    return model.eval()


def transformers_greedy(reference, prompt: torch.Tensor, n: int) -> torch.Tensor:
    """n new tokens of transformers' own greedy `generate` (no end-of-sequence stop): the reference output."""
    with torch.no_grad():
        return reference.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                                  pad_token_id=0)[:, prompt.shape[1]:]
