"""`multitoken generate`: sample from a checkpoint with the next-token head and a KV cache."""

from __future__ import annotations

import sys
import time

from jsonargparse import Namespace

from multitoken.cli.common import add_ckpt_argument, add_device_argument, new_parser
from multitoken.errors import ConfigError


def add_parser(subcommands) -> None:
    parser = new_parser("Generate text from a checkpoint with the next-token head (KV-cached).")
    add_ckpt_argument(parser)
    parser.add_argument("--prompt", required=True, help="Text to continue.")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=200, help="Tokens to generate.")
    parser.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature; 0 is greedy.")
    parser.add_argument("--top-k", "--top_k", type=int | None, default=None, help="Sample among the k most likely.")
    parser.add_argument("--top-p", "--top_p", type=float | None, default=0.9,
                        help="Nucleus sampling: keep the most likely tokens covering this probability; null for all.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for sampling (same seed, same output).")
    add_device_argument(parser)
    subcommands.add_subcommand("generate", parser, help="Generate text from a checkpoint.")


def run(args: Namespace) -> int:
    import torch

    from multitoken.decoding import generate
    from multitoken.training.checkpoint import load_model
    from multitoken.training.runtime import resolve_device

    if args.max_new_tokens < 0:
        raise ConfigError(f"--max-new-tokens must be >= 0 (got {args.max_new_tokens})")
    if args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0 (got {args.temperature}); 0 is greedy")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1 (got {args.top_k})")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1] (got {args.top_p})")
    device = resolve_device(args.device)
    model, _, tokenizer = load_model(args.ckpt, device)
    ids = tokenizer.encode(args.prompt)
    context = model.config.max_seq_len
    if not ids:
        raise ConfigError("the prompt is empty: give --prompt some text to continue")
    if len(ids) >= context:
        raise ConfigError(f"the prompt is {len(ids)} tokens but the model's context is {context}: shorten the prompt")
    if len(ids) + args.max_new_tokens > context:
        raise ConfigError(f"prompt ({len(ids)} tokens) + --max-new-tokens ({args.max_new_tokens}) exceeds the "
                          f"model's context of {context}: use --max-new-tokens {context - len(ids)} or less")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    prompt = torch.tensor([ids], device=device)
    start = time.perf_counter()
    out = generate(model, prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, generator)
    elapsed = time.perf_counter() - start
    print(tokenizer.decode(out[0].tolist()))
    print(f"[{args.max_new_tokens} tokens in {elapsed:.2f} s, {args.max_new_tokens / max(elapsed, 1e-9):.1f} tokens/s]",
          file=sys.stderr)
    return 0
