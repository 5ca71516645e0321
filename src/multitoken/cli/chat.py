"""`multitoken chat`: an interactive conversation with a model through its chat template, history kept, each answer
decoded self-speculatively when the model has extra heads (the same answer plain decoding gives, greedy)."""

from __future__ import annotations

import sys
import time

from jsonargparse import Namespace

from multitoken.cli.common import add_ckpt_argument, add_device_argument, new_parser
from multitoken.cli.generate import TextStream, add_sampling_arguments, check_sampling, check_text, until_eos
from multitoken.errors import ConfigError

HELP = "type a message and press Enter; /reset forgets the conversation, /exit (or an empty line at the end) quits"


def add_parser(subcommands) -> None:
    parser = new_parser("Chat with a model that has a chat template (a model converted from a Hugging Face folder "
                        "or a GGUF file). Reads one message per line from standard input and streams each answer "
                        "as it is decoded; models with extra heads answer with self-speculative decoding (same text, "
                        "fewer forwards).")
    add_ckpt_argument(parser)
    parser.add_argument("--system", type=str | None, default=None, help="A system message opening the conversation.")
    add_sampling_arguments(parser)
    parser.set_defaults(temperature=0.0, max_new_tokens=256)
    parser.add_argument("--speculative", type=bool, default=True,
                        help="Decode with the model's extra heads when it has any (false: plain decoding).")
    add_device_argument(parser)
    subcommands.add_subcommand("chat", parser, help="Chat with a model interactively.")


def run(args: Namespace) -> int:
    import torch

    from multitoken.data.chat import encode_chat
    from multitoken.decoding import generate
    from multitoken.decoding.speculative import speculative_generate
    from multitoken.checkpoint import load_checkpoint
    from multitoken.training.runtime import resolve_device

    check_sampling(args)
    device = resolve_device(args.device)
    model, _, tokenizer = load_checkpoint(args.ckpt, device)
    if not tokenizer.chat_template:
        raise ConfigError(f"{args.ckpt}: this model's tokenizer has no chat template, so it has no chat format: use "
                          "`multitoken generate --prompt` to continue text instead")
    speculative = args.speculative and model.n_future > 1
    history = [{"role": "system", "content": check_text(args.system, "--system")}] if args.system else []
    generator = torch.Generator(device=device).manual_seed(args.seed)
    stop_ids = torch.tensor([tokenizer.eot_id], device=device)
    interactive = sys.stdin.isatty()
    print(f"[{HELP}]", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        message = line.rstrip("\n")
        if message.strip() == "/reset":
            history = history[:1] if args.system else []
            print("[conversation reset]", file=sys.stderr)
            continue
        if not message.strip():
            continue
        history.append({"role": "user", "content": check_text(message, "the message")})
        ids = encode_chat(tokenizer, history)
        room = model.config.max_seq_len - len(ids)
        if room < 1:
            history.pop()
            print(f"[the conversation is {len(ids)} tokens, the model's context is {model.config.max_seq_len}: "
                  "/reset to start again]", file=sys.stderr)
            continue
        prompt = torch.tensor([ids], device=device)
        stream = TextStream(tokenizer, [], tokenizer.eot_id, [])
        sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, generator=generator,
                        stop_ids=stop_ids, on_tokens=stream)
        start = time.perf_counter()
        if speculative:
            new, stats = speculative_generate(model, prompt, min(args.max_new_tokens, room), **sampling)
        else:
            new, stats = generate(model, prompt, min(args.max_new_tokens, room), **sampling), None
        elapsed = time.perf_counter() - start
        stream.close(new[0].tolist())
        n_new = until_eos(new[0].tolist(), tokenizer.eot_id)[1]
        history.append({"role": "assistant", "content": stream.text})
        detail = f", tau {stats.tau:.2f}" if stats is not None else ""
        print(f"[{n_new} tokens, {n_new / max(elapsed, 1e-9):.1f} tokens/s{detail}]", file=sys.stderr)
