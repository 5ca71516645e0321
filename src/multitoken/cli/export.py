"""`multitoken export`: a multitoken checkpoint -> a Hugging Face or Meta model folder."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Literal

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser


def add_parser(subcommands) -> None:
    parser = command_parser(export_checkpoint)
    subcommands.add_subcommand("export", parser, help="Export a checkpoint to Hugging Face or Meta format.")


def export_checkpoint(ckpt: str, format: Literal["hf", "meta"], out: str, progress: bool = True) -> int:
    """Export a multitoken checkpoint. --format hf writes a folder of the model's own transformers class
    (Llama, Mistral, Qwen2, Qwen3, Gemma 3) that AutoModelForCausalLM.from_pretrained loads (trunk + head 1, with its tokenizer), with the extra heads beside it in
    mtp_heads.safetensors, so that `multitoken convert` gives back the whole model bit for bit. --format meta writes
    params.json (with n_future_tokens) and consolidated.00.pth, the layout of Meta's multi-token release.

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest).
        format: hf (the model's transformers class, extra heads beside it) or meta (params.json +
            consolidated.00.pth).
        out: New folder to write (must not exist).
        progress: Show a progress bar.
    """
    return _run(SimpleNamespace(**locals()))  # the options as one object, for the steps below


def run(args: Namespace) -> int:
    return call(export_checkpoint, args)


def _run(args: SimpleNamespace) -> int:
    from multitoken.interop.export import export

    out = export(args.ckpt, args.format, args.out, progress=args.progress)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"exported {args.ckpt} as {args.format} -> {out}: {files}")
    return 0
