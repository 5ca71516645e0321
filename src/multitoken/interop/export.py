"""`export`: a multitoken checkpoint -> a Hugging Face folder of its family's class (Llama, Mistral, Qwen2, Qwen3,
Gemma 3) or a Meta folder.

hf: the trunk and head 1 are an ordinary model of the family (`model.safetensors`, `config.json`, `generation_config.json`, the
tokenizer), loadable by `transformers.AutoModelForCausalLM.from_pretrained` with head 1's logits. Heads 2..n go
beside it in `mtp_heads.safetensors` (same per-layer names, `mtp_heads.{j}.*`) described by `mtp_heads.json`; a
transformers user never sees them, and `multitoken convert` of the folder gives back the whole model bit for bit.

meta: `params.json` (with n_future_tokens) and `consolidated.00.pth`, the layout of Meta's multi-token release.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from multitoken.config import ModelConfig
from multitoken.data.tokenizer import SentencePieceTokenizer, load_tokenizer
from multitoken.errors import CheckpointError
from multitoken.interop import families, hf, meta
from multitoken.files import check_new_folder, check_writable, new_folder
from multitoken.interop.source import check_tensors
from multitoken.interop.tensors import LazyTensor, safetensors_tensors, write_safetensors
from multitoken.interop.tokenizers import save_hf_tokenizer


def hf_config(config: ModelConfig, dtype: torch.dtype, token_ids: dict) -> dict:
    """config.json of the trunk + head 1 as its family's transformers class (`families.family_of`). Rope settings
    at the top level (rope_theta, rope_scaling), which transformers 4 reads and transformers 5 still accepts; Gemma 3's
    per layer type, as transformers 5 writes them."""
    family = families.family_of(config)
    n_layers = config.n_trunk_layers + 1
    out = {
        "architectures": [family.hf_architecture], "model_type": family.hf_model_type,
        "vocab_size": config.vocab_size, "hidden_size": config.d_model, "intermediate_size": config.ffn_dim,
        "num_hidden_layers": n_layers, "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads, "head_dim": config.head_size,
        "max_position_embeddings": config.max_seq_len, "rms_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.tie_embeddings, "attention_dropout": 0.0, "mlp_bias": False,
        "initializer_range": config.init_std, "use_cache": True, "torch_dtype": str(dtype).removeprefix("torch."),
        **token_ids,
    }
    types = ["sliding_attention" if config.is_sliding(i) else "full_attention" for i in range(n_layers)]
    if family.name == "gemma3":
        full = {"rope_type": "default", "rope_theta": config.rope_theta, **(config.rope_scaling or {})}
        local = {"rope_type": "default", "rope_theta": config.rope_local_theta or config.rope_theta}
        # transformers keeps the scale as query_pre_attn_scalar, an integer: 1 / scale^2, rounded back to it
        scalar = config.head_size if config.attention_scale is None else config.attention_scale ** -2
        scalar = round(scalar) if abs(scalar - round(scalar)) < 1e-6 else scalar
        out.update(hidden_activation="gelu_pytorch_tanh", attention_bias=False, layer_types=types,
                   sliding_window=config.sliding_window or config.max_seq_len,
                   rope_parameters={"full_attention": full, "sliding_attention": local},
                   query_pre_attn_scalar=scalar,
                   final_logit_softcapping=None, attn_logit_softcapping=None)
        return out
    out.update(hidden_act="silu", rope_theta=config.rope_theta, rope_scaling=config.rope_scaling)
    if family.name in ("llama", "mistral"):
        out.update(attention_bias=False, pretraining_tp=1, sliding_window=config.sliding_window)
    else:  # Qwen2 / Qwen3: which layers use the window, as layer_types
        out.update(use_sliding_window=config.sliding_window is not None, sliding_window=config.sliding_window,
                   layer_types=types, max_window_layers=n_layers)
        if family.name == "qwen3":
            out["attention_bias"] = False
    return out


def _hf_tensors(tensors: dict[str, LazyTensor], config: ModelConfig) -> dict[str, dict[str, LazyTensor]]:
    """Our tensors under transformers' names, q and k rows permuted to rotate-half, split by file."""
    files: dict[str, dict[str, LazyTensor]] = {hf.WEIGHTS_FILE: {}, hf.HEADS_FILE: {}}
    for ours, lazy in tensors.items():
        file, name = hf.hf_name(ours, config)
        heads = hf.qk_rows(ours, config)
        if heads is not None:
            lazy = lazy.map(lambda w, h=heads: hf.interleaved_to_halves(w, h, config.head_size))
        files[file][name] = lazy
    return files


def export(ckpt_path: str | Path, fmt: Literal["hf", "meta", "eagle3", "eagle3-gguf"], out: str | Path,
           progress: bool = False, target: str | Path | None = None) -> Path:
    """target: the target model's GGUF, for eagle3-gguf (its tokenizer goes into the draft file)."""
    from multitoken.checkpoint import read_train_config, resolve_checkpoint

    out = Path(out).expanduser()
    if fmt != "eagle3-gguf":  # a folder (eagle3-gguf writes one file: checked where it is written)
        check_new_folder(out)
    else:
        check_writable(out)
    ckpt = resolve_checkpoint(ckpt_path)
    config = read_train_config(ckpt).model
    if fmt in ("eagle3", "eagle3-gguf"):
        return _export_drafter(ckpt, config, fmt, out, target)
    tokenizer = load_tokenizer(ckpt)
    if config.heads_read_next_token:
        raise CheckpointError(f"{ckpt}: its extra heads read the next token (model.heads_read_next_token), and "
                              f"neither the {fmt} layout nor transformers has a place for their projections: decode "
                              "it with multitoken, or export a checkpoint whose heads read z alone")
    tensors = safetensors_tensors(ckpt / "model.safetensors")
    check_tensors(tensors, config, str(ckpt), lambda n: n)
    # The draft vocabulary only narrows what the extra heads propose; neither format has a place for it, and without
    # it the heads draft over every token (the same outputs: head 1 verifies).
    tensors.pop("draft_ids", None)
    # The drafter goes out in the engines' own draft format (--format eagle3 / eagle3-gguf), beside the target.
    tensors = {name: lazy for name, lazy in tensors.items() if not name.startswith("drafter.")}
    dtype = tensors["tok_embeddings.weight"].dtype
    if fmt == "meta":
        params = meta.params_for(config)  # refuses, before writing, what Meta's format cannot say
    with new_folder(out) as tmp:
        if fmt == "hf":
            files = _hf_tensors(tensors, config)
            write_safetensors(tmp / hf.WEIGHTS_FILE, files[hf.WEIGHTS_FILE], metadata={"format": "pt"},
                              progress="export" if progress else None)
            if config.n_future > 1:
                write_safetensors(tmp / hf.HEADS_FILE, files[hf.HEADS_FILE], metadata={"format": "pt"})
                heads = {"format": hf.HEADS_FORMAT, "version": 1, "n_future": config.n_future,
                         "file": hf.HEADS_FILE, "layers": "mtp_heads.{j} is head j + 2: one decoder layer reading the "
                         "input of the model's last layer (the trunk's output), then the model's shared norm and "
                         "lm_head; q/k rows in transformers' rotate-half layout"}
                (tmp / hf.HEADS_CONFIG).write_text(json.dumps(heads, indent=1) + "\n")
            token_ids = save_hf_tokenizer(tokenizer, tmp, config.max_seq_len)
            (tmp / hf.CONFIG_FILE).write_text(json.dumps(hf_config(config, dtype, token_ids), indent=1) + "\n")
            stops = tokenizer.stop_ids  # end-of-text, then any end-of-turn tokens: transformers stops at each
            generation = {"bos_token_id": token_ids["bos_token_id"], "eos_token_id": stops if len(stops) > 1 else stops[0]}
            (tmp / "generation_config.json").write_text(json.dumps(generation, indent=1) + "\n")
        else:
            # torch.save writes from memory: this format holds the whole model at once (convert streams).
            state = {name: lazy.load() for name, lazy in tensors.items()}
            if config.tie_embeddings:  # Meta's layout has no tying: the one matrix under both names
                state["output.weight"] = state["tok_embeddings.weight"]
            torch.save(state, tmp / "consolidated.00.pth")
            (tmp / meta.PARAMS_FILE).write_text(json.dumps(params, indent=1) + "\n")
            if isinstance(tokenizer, SentencePieceTokenizer):
                tokenizer.save(tmp)
                (tmp / "tokenizer_config.json").unlink()  # Meta's folders hold tokenizer.model alone
            else:
                save_hf_tokenizer(tokenizer, tmp, config.max_seq_len)
    return out


def _export_drafter(ckpt: Path, config: ModelConfig, fmt: str, out: Path, target: str | Path | None) -> Path:
    from multitoken.interop import eagle3

    if fmt == "eagle3-gguf" and target is None:
        raise CheckpointError("--format eagle3-gguf needs --target TARGET.gguf, the model the draft will run beside: "
                              "llama.cpp refuses a draft whose vocabulary is not its target's, so it is copied from it")
    if fmt == "eagle3" and target is not None:
        raise CheckpointError("--target is for --format eagle3-gguf; vLLM takes the target folder itself "
                              "(export it with --format hf)")
    tensors = safetensors_tensors(ckpt / "model.safetensors")
    check_tensors(tensors, config, str(ckpt), lambda n: n)
    state = eagle3.drafter_state(tensors, config, str(ckpt))
    if fmt == "eagle3":
        return eagle3.write_folder(state, config, out)
    return eagle3.write_gguf(state, config, out, Path(target).expanduser())
