"""`multitoken export`: a multitoken checkpoint -> a Hugging Face or Meta model folder."""

from __future__ import annotations

from typing import Literal

from jsonargparse import Namespace

from multitoken.cli.common import new_parser


def add_parser(subcommands) -> None:
    export = new_parser(
        "Export a multitoken checkpoint. --format hf writes a LlamaForCausalLM folder that transformers' "
        "AutoModelForCausalLM.from_pretrained loads (trunk + head 1, with its tokenizer), with the extra heads "
        "beside it in mtp_heads.safetensors, so that `multitoken convert` gives back the whole model bit for bit. "
        "--format meta writes params.json (with n_future_tokens) and consolidated.00.pth, the layout of Meta's "
        "multi-token release.")
    export.add_argument("--ckpt", required=True,
                        help="Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest).")
    export.add_argument("--format", required=True, type=Literal["hf", "meta"],
                        help="hf (transformers' LlamaForCausalLM, extra heads beside it) or meta (params.json + "
                             "consolidated.00.pth).")
    export.add_argument("--out", required=True, help="New folder to write (must not exist).")
    export.add_argument("--progress", type=bool, default=True, help="Show a progress bar.")
    subcommands.add_subcommand("export", export, help="Export a checkpoint to Hugging Face or Meta format.")


def run(args: Namespace) -> int:
    from multitoken.interop.export import export

    out = export(args.ckpt, args.format, args.out, progress=args.progress)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"exported {args.ckpt} as {args.format} -> {out}: {files}")
    return 0
