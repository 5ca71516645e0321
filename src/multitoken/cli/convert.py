"""`multitoken convert`: a Hugging Face or Meta model folder -> a multitoken checkpoint."""

from __future__ import annotations

from types import SimpleNamespace
import time
from typing import Literal

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser


def add_parser(subcommands) -> None:
    parser = command_parser(convert_model, skip=('src',))
    parser.add_argument("src", help="The model folder (or GGUF file) to convert.")  # positional: SRC
    subcommands.add_subcommand("convert", parser, help="Import a Hugging Face or Meta model folder.")


def convert_model(src: str, out: str, dtype: Literal["float32", "bfloat16", "float16"] | None = None,
                  tokenizer: str | None = None, max_seq_len: int | None = None, progress: bool = True) -> int:
    """Convert a model folder into a multitoken checkpoint. SRC is detected by its files: a Hugging Face folder
    (config.json + model.safetensors or shards with model.safetensors.index.json; LlamaForCausalLM,
    MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM or Gemma3ForCausalLM), a Meta folder (params.json +
    consolidated.pth or consolidated.NN.pth, e.g. facebook/multi-token-prediction's 7B_200B_4) or a GGUF file
    (llama, qwen2, qwen3 or gemma3). Weights stream tensor by tensor, so a model larger
    than memory converts. The result works with generate, generate --speculative, eval, info, bench decode and
    train --init-from.

    Args:
        src: The model folder (or GGUF file) to convert.
        out: New folder for the checkpoint (must not exist).
        dtype: Store the weights in this dtype; default: as the source stores them.
        tokenizer: The model's tokenizer (tokenizer.json, tokenizer.model, or a folder with one) when SRC has none;
            default: the one in SRC (for Meta folders, also the folder above).
        max_seq_len: Context length to use; default: config.json's max_position_embeddings (the sliding window for
            Mistral, if shorter), or 4096 for Meta folders.
        progress: Show a progress bar.
    """
    return _run(SimpleNamespace(**locals()))  # the options as one object, for the steps below


def run(args: Namespace) -> int:
    return call(convert_model, args)


def _run(args: SimpleNamespace) -> int:
    from multitoken.interop.convert import convert

    start = time.perf_counter()
    result = convert(args.src, args.out, args.dtype, args.tokenizer, args.max_seq_len, progress=args.progress)
    m, c = result.model, result.model.config
    for note in m.notes:
        print(f"note: {note}")
    heads = f"{c.n_future} heads (n_future)" if c.n_future > 1 else "1 head (a next-token model)"
    print(f"converted {m.format} folder {m.path} -> {result.out} in {time.perf_counter() - start:.1f} s")
    print(f"  model      n_layer={c.n_layer} (trunk {c.n_trunk_layers} + {heads}), d_model={c.d_model}, "
          f"n_head={c.n_head}, n_kv_head={c.kv_heads}, vocab_size={c.vocab_size}, context {c.max_seq_len}"
          f"{', tied embeddings' if c.tie_embeddings else ''}"
          f"{', rope ' + str(c.rope_scaling['rope_type']) + ' scaling' if c.rope_scaling else ''}")
    print(f"  weights    {result.bytes_written / 1e6:,.1f} MB, {str(result.dtype).removeprefix('torch.')}")
    print(f"  tokenizer  {m.tokenizer.kind} (vocab {m.tokenizer.vocab_size:,})")
    print(f"try it:      multitoken generate --ckpt {result.out} --prompt 'Hello'")
    return 0
