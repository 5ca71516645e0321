"""`multitoken distill`: a prepared dataset of a model's own answers to prompts, for training its heads."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser
from multitoken.errors import ConfigError


def add_parser(subcommands) -> None:
    subcommands.add_subcommand("distill", command_parser(distill),
                               help="Write a dataset of the model's own answers (for its heads).")


def distill(ckpt: str, prompts: str, out: str, chat: str = "auto", prompt_tokens: int | None = None,
            max_new_tokens: int = 256, batch_size: int = 16, temperature: float = 0.0, top_p: float | None = None,
            seed: int = 0, compile: bool = True, val_fraction: float = 0.02, progress: bool | None = None,
            device: str = "auto") -> int:
    """Self-distillation: decode prompts with the model and write prompt + answer documents as a prepared dataset
    (`train --data OUT` reads it). Heads trained on the model's own answers draft what it will say, which is what
    speculative decoding accepts; on raw corpus text they learn what an author would write instead. Resumable: run
    the same command again after a kill and it continues with the next batch.

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest checkpoint).
        prompts: A .jsonl file ({"messages": [...]} conversations or {"prompt": "..."} per line), a text file with
            one prompt per line, or with --prompt_tokens a text corpus to cut.
        out: Folder for the dataset (new, empty, or this distillation's).
        chat: Format prompts with the model's chat template: 'auto' (when the model has one), 'true' or 'false'.
        prompt_tokens: Read --prompts as one text corpus and cut it into prompts of this many tokens (no chat
            template): the model continues each piece in its own words.
        max_new_tokens: Longest answer; most end at EOS before it.
        batch_size: Prompts decoded together (of similar lengths); larger is faster per token on a GPU.
        temperature: 0: greedy answers, exactly what greedy (and speculative) decoding will say; above 0: sampled
            answers, more varied data.
        top_p: Nucleus sampling with --temperature > 0.
        seed: Seed for sampling (each batch seeded from it).
        compile: Compiled decoding steps (one compilation, a few minutes on CPU, then faster steps).
        val_fraction: Share of prompts kept for validation.
        progress: Progress bar (default: when the output is a terminal).
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'.
    """
    return _run(SimpleNamespace(**locals()))  # the options as one object, for the steps below


def _use_chat(value: str, tokenizer) -> bool:
    if value not in ("auto", "true", "false"):
        raise ConfigError(f"--chat is 'auto', 'true' or 'false' (got {value!r})")
    has_template = bool(tokenizer.chat_template)
    if value == "true" and not has_template:
        raise ConfigError("--chat true but the model's tokenizer has no chat template: use --chat false (prompts "
                          "as plain text), or convert a model that ships one")
    return has_template if value == "auto" else value == "true"


def _corpus_prompts(path: str, tokenizer, prompt_tokens: int) -> tuple[list[list[int]], list[str]]:
    """A text corpus cut into consecutive prompts of prompt_tokens tokens (the last, shorter piece dropped)."""
    from multitoken.data.prompts import read_prompts

    if prompt_tokens < 1:
        raise ConfigError(f"--prompt-tokens must be at least 1 (got {prompt_tokens})")
    text = "\n".join(p.text or "" for p in read_prompts(path))
    ids = tokenizer.encode(text)
    prompts = [ids[i:i + prompt_tokens] for i in range(0, len(ids) - prompt_tokens + 1, prompt_tokens)]
    if not prompts:
        raise ConfigError(f"{path} holds {len(ids)} tokens, fewer than --prompt-tokens {prompt_tokens}: give more "
                          "text or a smaller --prompt-tokens")
    return prompts, [tokenizer.decode(p) for p in prompts]


def model_id(ckpt: Path) -> str:
    """Names the weights (file, size, modification time): answers resume only for the very same model."""
    weights = ckpt / "model.safetensors"
    stat = weights.stat()
    return f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def run(args: Namespace) -> int:
    return call(distill, args)


def _run(args: SimpleNamespace) -> int:
    from multitoken.data.distill import DistillOptions, distill, remove_parts
    from multitoken.data.prompts import encode_prompt, read_prompts
    from multitoken.checkpoint import load_checkpoint, resolve_checkpoint
    from multitoken.files import check_writable
    from multitoken.training.runtime import resolve_device

    options = DistillOptions(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                             temperature=args.temperature, top_p=args.top_p, seed=args.seed, compile=args.compile,
                             val_fraction=args.val_fraction)
    device = resolve_device(args.device)
    ckpt = resolve_checkpoint(args.ckpt)
    check_writable(Path(args.out))  # before the model loads and answers are generated into nowhere
    model, _, tokenizer = load_checkpoint(ckpt, device)
    if args.prompt_tokens is not None:
        if args.chat == "true":
            raise ConfigError("--prompt-tokens cuts a text corpus into plain-text prompts: drop --chat true")
        prompts, keys = _corpus_prompts(args.prompts, tokenizer, args.prompt_tokens)
        chat = False
    else:
        chat = _use_chat(args.chat, tokenizer)
        records = read_prompts(args.prompts)
        prompts, keys = [encode_prompt(tokenizer, p, chat) for p in records], [p.key for p in records]
    result = distill(model, tokenizer, prompts, keys, args.out, model_id(ckpt), options, progress=args.progress)
    stats = result.stats
    if result.up_to_date:
        print(f"{args.out} is up to date: {stats['prompts']} answers, {stats['answer_tokens']} tokens")
        return 0
    remove_parts(args.out)
    decode_seconds = max(result.seconds, 1e-9)
    splits = result.manifest["splits"]
    print(f"distilled {stats['prompts']} prompts ({'chat template' if chat else 'plain text'}) into {args.out}: "
          f"{stats['answer_tokens']} answer tokens (mean {stats['mean_answer_tokens']:.1f}, "
          f"{stats['ended_at_eos']:.0%} ended at EOS), {result.new_tokens} decoded now in {result.seconds:.1f} s "
          f"({result.new_tokens / decode_seconds:.1f} tokens/s"
          + (f", {result.batches_reused} of {result.batches} batches resumed" if result.batches_reused else "")
          + f"); train {splits['train']['tokens']} tokens, val {splits['val']['tokens']} tokens", file=sys.stderr)
    return 0
