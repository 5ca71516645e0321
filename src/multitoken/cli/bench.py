"""`multitoken bench ...`: benchmarks that compare side by side in one run and write JSON."""

from __future__ import annotations

import json
from pathlib import Path

from jsonargparse import Namespace

from multitoken.cli.common import add_ckpt_argument, add_device_argument, new_parser
from multitoken.cli.generate import add_speculative_arguments, check_prompt_fits, check_speculative
from multitoken.errors import ConfigError


def add_parser(subcommands) -> None:
    bench = new_parser("Benchmarks: side-by-side comparisons in one run, as a table and JSON.")
    subcommands.add_subcommand("bench", bench, help="Benchmarks (decode).")
    inner = bench.add_subcommands(required=True, dest="bench")  # jsonargparse: outer level registered first

    decode = new_parser("Plain vs self-speculative decoding on the same prompts in one run, alternating: tokens/s "
                        "of each, the speedup, tau (tokens per forward), acceptance per draft position, and whether "
                        "the outputs were identical.")
    add_ckpt_argument(decode)
    decode.add_argument("--prompts", type=str | None, default=None,
                        help="Text file with one prompt per line; default: windows from the validation split.")
    decode.add_argument("--num-prompts", "--num_prompts", type=int, default=8,
                        help="Prompts taken from the validation split (without --prompts).")
    decode.add_argument("--prompt-len", "--prompt_len", type=int, default=64,
                        help="Tokens per validation-split prompt (without --prompts).")
    decode.add_argument("--batch-size", "--batch_size", type=int, default=1, help="Prompts decoded together.")
    decode.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=128, help="Tokens per prompt.")
    add_speculative_arguments(decode)
    decode.add_argument("--temperature", type=float, default=0.0,
                        help="0 (greedy, the default) checks identical outputs; > 0 measures speculative sampling.")
    decode.add_argument("--repeats", type=int, default=3, help="Timed rounds over all prompts.")
    decode.add_argument("--json", type=str | None, default=None, help="Write the results to this JSON file.")
    add_device_argument(decode)
    inner.add_subcommand("decode", decode, help="Plain vs self-speculative decoding.")


def _prompts_from_file(path: str, tokenizer) -> list[list[int]]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read prompt file {path}: {e.strerror}") from None
    prompts = [tokenizer.encode(line) for line in lines if line.strip()]
    if not prompts:
        raise ConfigError(f"prompt file {path} has no prompts: put one prompt per line")
    return prompts


def _run_decode(args: Namespace) -> int:
    import numpy as np

    from multitoken.bench.decode import bench_decode, format_decode_table
    from multitoken.data.tokens import load_tokens
    from multitoken.training.checkpoint import load_model, resolve_checkpoint
    from multitoken.training.runtime import resolve_device

    for name in ("num_prompts", "prompt_len", "batch_size", "max_new_tokens", "repeats"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    device = resolve_device(args.device)
    ckpt = resolve_checkpoint(args.ckpt)
    model, cfg, tokenizer = load_model(ckpt, device)
    k = check_speculative(model, args.draft_len, args.ckpt)
    context = model.config.max_seq_len
    if args.prompts is not None:
        prompts, source = _prompts_from_file(args.prompts, tokenizer), args.prompts
    else:
        val = load_tokens(cfg.data, tokenizer).val
        check_prompt_fits(min(args.prompt_len, len(val)), args.max_new_tokens, context, "--prompt-len")
        starts = np.linspace(0, len(val) - args.prompt_len, args.num_prompts).astype(np.int64)
        prompts = [val[s:s + args.prompt_len].astype(np.int64).tolist() for s in starts]
        source = f"validation split, {args.num_prompts} windows of {args.prompt_len} tokens"
    for i, ids in enumerate(prompts):
        check_prompt_fits(len(ids), args.max_new_tokens, context, f"prompt {i + 1}")
    print(f"benchmarking {ckpt} on {source}", flush=True)
    result = bench_decode(model, prompts, args.batch_size, args.max_new_tokens, k, args.temperature, args.repeats,
                          device=device)
    result.update(checkpoint=str(ckpt), prompts=source)
    print(format_decode_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def run(args: Namespace) -> int:
    return {"decode": _run_decode}[args.bench](args[args.bench])
