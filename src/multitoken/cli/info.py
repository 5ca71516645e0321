"""`multitoken info`: a checkpoint's config and parameter counts by part."""

from __future__ import annotations

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser, print_json


def add_parser(subcommands) -> None:
    subcommands.add_subcommand("info", command_parser(info), help="Show a checkpoint's config and parameter counts.")


def run(args: Namespace) -> int:
    return call(info, args)


def info(ckpt: str, json: bool = False) -> int:
    """Show a checkpoint's model config and parameter counts (embeddings, trunk, heads).

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest checkpoint).
        json: Print JSON instead of text.
    """
    import torch

    from multitoken.config import to_dict
    from multitoken.data.tokenizer import load_tokenizer
    from multitoken.model import MTPModel
    from multitoken.checkpoint import read_meta, resolve_checkpoint, verified_train_config

    ckpt = resolve_checkpoint(ckpt)
    cfg = verified_train_config(ckpt)  # the weights' shapes agree with it, so the counts below are the weights'
    meta = read_meta(ckpt)
    tokenizer = load_tokenizer(ckpt)  # the checkpoint's own: data.tokenizer may say 'bytes' for prepared BPE data
    with torch.device("meta"):  # shapes only: counting parameters needs no memory and no weights
        counts = MTPModel(cfg.model).num_params()
    m = cfg.model
    if json:
        print_json({"checkpoint": str(ckpt), "step": meta["step"], "tokens_seen": meta.get("tokens_seen"),
                    "model": to_dict(m), "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
                    "params": counts})
        return 0
    print(f"checkpoint   {ckpt}")
    if meta.get("converted_from"):
        print(f"converted    from {meta.get('source_format')} folder {meta['converted_from']} ({meta.get('dtype')})")
    else:
        print(f"step         {meta['step']}  ({meta.get('tokens_seen') or 0:,} tokens seen)")
    print(f"model        n_layer={m.n_layer} (trunk {m.n_trunk_layers} + {m.n_future} heads), d_model={m.d_model}, "
          f"n_head={m.n_head}, vocab_size={m.vocab_size}, max_seq_len={m.max_seq_len}, tokenizer={tokenizer.kind}")
    block = block_description(m)
    if block:
        print(f"block        {block}")
    if m.draft_vocab:
        print(f"drafting     extra heads over {m.draft_vocab:,} of the {m.vocab_size:,} tokens (head 1 over all)")
    if m.heads_read_next_token and m.n_future > 1:
        print("drafting     extra heads read the token after their position (head 1's choice when decoding)")
    print("parameters")
    labels = {"tok_embeddings": "input embedding", "trunk": f"trunk ({m.n_trunk_layers} layers)",
              "heads": f"heads ({m.n_future} x 1 layer"
              + (f" + {m.n_future - 1} projections)" if m.heads_read_next_token else ")"), "norm": "final norm",
              "output": "unembedding (tied to input)" if m.tie_embeddings else "unembedding (output)", "total": "total"}
    width = max(24, *(len(label) for label in labels.values()))
    for key, label in labels.items():
        share = counts[key] / counts["total"]
        print(f"  {label:<{width}} {counts[key]:>14,}  {share:>6.1%}")
    return 0


SWITCH_WORDS = {"qkv_bias": "q/k/v biases", "qk_norm": "q/k norms", "norm_unit_offset": "(1 + w) norms",
                "sandwich_norm": "sandwich norms", "scale_embeddings": "scaled embeddings"}


def block_description(m) -> str:
    """The block's switches that differ from a Llama's, in words (empty for a Llama block)."""
    switches = m.block_switches()
    parts = [words for name, words in SWITCH_WORDS.items() if name in switches]
    if "activation" in switches:
        parts.append(f"{m.activation} feed-forward")
    if m.attention_scale is not None:
        parts.append(f"query scale {m.attention_scale:.4g}")
    if m.sliding_window is not None:
        where = "every layer" if m.sliding_layers is None else \
            f"{len(m.sliding_layers)} of {m.n_trunk_layers + 1} layers"
        parts.append(f"window {m.sliding_window} on {where}" +
                     (f" (rotary base {m.rope_local_theta:g})" if m.rope_local_theta is not None else ""))
    return ", ".join(parts)
