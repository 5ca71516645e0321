"""`multitoken export`: a multitoken checkpoint -> a Hugging Face or Meta model folder."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Literal

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser


def add_parser(subcommands) -> None:
    parser = command_parser(export_checkpoint)
    subcommands.add_subcommand("export", parser, help="Export a checkpoint to Hugging Face or Meta format, or its "
                               "drafter as an EAGLE-3 draft for vLLM or llama.cpp.")


def export_checkpoint(ckpt: str, format: Literal["hf", "meta", "eagle3", "eagle3-gguf"], out: str,
                      target: str | None = None, progress: bool = True) -> int:
    """Export a multitoken checkpoint. --format hf writes a folder of the model's own transformers class
    (Llama, Mistral, Qwen2, Qwen3, Gemma 3) that AutoModelForCausalLM.from_pretrained loads (trunk + head 1, with its
    tokenizer), with the extra heads beside it in mtp_heads.safetensors, so that `multitoken convert` gives back the
    whole model bit for bit. --format meta writes params.json (with n_future_tokens) and consolidated.00.pth, the
    layout of Meta's multi-token release. The drafter (model.drafter eagle3) goes out as the engines' EAGLE-3 draft:
    --format eagle3 a folder vLLM loads (speculative_config method eagle3), --format eagle3-gguf one file llama.cpp
    loads (--spec-type draft-eagle3), beside the target it was trained on (docs/engines.md).

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest).
        format: hf (the model's transformers class, extra heads beside it), meta (params.json +
            consolidated.00.pth), eagle3 (the drafter as a vLLM draft folder) or eagle3-gguf (the drafter as a
            llama.cpp draft file).
        out: New folder (or, for eagle3-gguf, file) to write (must not exist).
        target: eagle3-gguf only: the target model's GGUF, whose tokenizer the draft file carries (llama.cpp refuses
            a draft whose vocabulary is not its target's); checked to match the checkpoint's base.
        progress: Show a progress bar.
    """
    return _run(SimpleNamespace(**locals()))  # the options as one object, for the steps below


def run(args: Namespace) -> int:
    return call(export_checkpoint, args)


def _run(args: SimpleNamespace) -> int:
    from multitoken.interop.export import export

    out = export(args.ckpt, args.format, args.out, progress=args.progress, target=args.target)
    if args.format.startswith("eagle3"):
        from multitoken.checkpoint import read_train_config, resolve_checkpoint
        from multitoken.interop.eagle3 import engine_note

        note = engine_note(read_train_config(resolve_checkpoint(args.ckpt)).model, args.format)
        if note:
            print(note, file=sys.stderr)
    files = ", ".join(sorted(p.name for p in out.iterdir())) if out.is_dir() else f"{out.stat().st_size:,} bytes"
    print(f"exported {args.ckpt} as {args.format} -> {out}: {files}")
    return 0
