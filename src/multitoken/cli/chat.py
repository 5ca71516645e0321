"""`multitoken chat`: an interactive conversation with a model through its chat template, history kept, each answer
decoded self-speculatively when the model has extra heads (the same answer plain decoding gives, greedy)."""

from __future__ import annotations

import sys

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser
from multitoken.cli.generate import check_sampling, check_text, decode_timed
from multitoken.decoding.draft_options import check_needs_speculative, parse_tree
from multitoken.decoding.text import TextStream, until_eos
from multitoken.errors import ConfigError

HELP = "type a message and press Enter; /reset forgets the conversation, /exit (or an empty line at the end) quits"


def add_parser(subcommands) -> None:
    subcommands.add_subcommand("chat", command_parser(chat), help="Chat with a model interactively.")


def run(args: Namespace) -> int:
    return call(chat, args)


def chat(ckpt: str, system: str | None = None, max_new_tokens: int = 256, temperature: float = 0.0,
         top_k: int | None = None, top_p: float | None = 0.9, seed: int = 0, speculative: bool = True,
         tree: str = "chain", compile: bool = False, device: str = "auto") -> int:
    """Chat with a model that has a chat template (a model converted from a Hugging Face folder or a GGUF file).
    Reads one message per line from standard input and streams each answer as it is decoded; models with extra
    heads answer with self-speculative decoding (same text, fewer forwards).

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest checkpoint).
        system: A system message opening the conversation.
        max_new_tokens: Tokens per answer, at most.
        temperature: Sampling temperature; 0 is greedy.
        top_k: Sample among the k most likely.
        top_p: Nucleus sampling: keep the most likely tokens covering this probability; null for all.
        seed: Seed for sampling (same seed, same conversation).
        speculative: Decode with the model's extra heads when it has any (false: plain decoding).
        tree: Draft tree verified per step (greedy): 'chain' (each extra head's top guess), or paths of candidate
            ranks such as "(0,), (1,), (0, 0)", e.g. the tree `bench decode --tree auto` picked for this model and
            machine, optionally with tokens copied from the conversation on its first-choice path: "(0,), (1,),
            (0, 0), lookup 2" ("lookup 3" alone needs no heads). Sampling uses the chain of the heads.
        compile: Compile the decoding steps with torch.compile (the first answer waits for it, a few minutes on a
            CPU; later answers reuse the steps while the conversation stays within the same cache length).
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'.
    """
    import torch

    from multitoken.checkpoint import load_checkpoint
    from multitoken.training.runtime import resolve_device

    check_sampling(max_new_tokens, temperature, top_k, top_p, seed)
    check_needs_speculative(speculative, tree, None)
    device = resolve_device(device)
    model, _, tokenizer = load_checkpoint(ckpt, device)
    draft_tree = parse_tree(tree, model, None, temperature) if speculative else None
    if speculative and model.n_future == 1 and draft_tree is None:
        speculative = False  # no heads to draft with and no lookup asked for: plain decoding
    if not tokenizer.chat_template:
        raise ConfigError(f"{ckpt}: this model's tokenizer has no chat template, so it has no chat format: use "
                          "`multitoken generate --prompt` to continue text instead")
    opening = [{"role": "system", "content": check_text(system, "--system")}] if system else []
    history = list(opening)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=torch.Generator(device=device).manual_seed(seed),
                    stop_ids=torch.tensor(tokenizer.stop_ids, device=device))
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
            history = list(opening)
            print("[conversation reset]", file=sys.stderr)
        elif message.strip():
            history.append({"role": "user", "content": check_text(message, "the message")})
            _answer(model, tokenizer, history, max_new_tokens, speculative, draft_tree, compile, sampling)


def _answer(model, tokenizer, history: list[dict], max_new_tokens: int, speculative: bool, tree, compile: bool,
            sampling: dict) -> None:
    """Stream the model's answer to the conversation so far and append it to history (or, when the conversation no
    longer fits the context, drop the last message and say so)."""
    import torch

    from multitoken.data.chat import encode_chat

    ids = encode_chat(tokenizer, history)
    room = model.config.max_seq_len - len(ids)
    if room < 1:
        history.pop()
        print(f"[the conversation is {len(ids)} tokens, the model's context is {model.config.max_seq_len}: "
              "/reset to start again]", file=sys.stderr)
        return
    prompt = torch.tensor([ids], device=model.output.weight.device)
    stream = TextStream(tokenizer, [], tokenizer.stop_ids, [])
    # The first answer at a cache length compiles its step (with --compile): reported apart from tokens/s.
    new, stats, elapsed, compiling = decode_timed(model, prompt, min(max_new_tokens, room), speculative, None, tree,
                                                  compile, dict(sampling, on_tokens=stream))
    stream.close(new[0].tolist())
    n_new = until_eos(new[0].tolist(), tokenizer.stop_ids)[1]
    history.append({"role": "assistant", "content": stream.text})
    detail = f", tau {stats.tau:.2f}" if stats is not None else ""
    detail += f", compiling {compiling:.0f} s not counted" if compiling > 0 else ""
    print(f"[{n_new} tokens, {n_new / max(elapsed, 1e-9):.1f} tokens/s{detail}]", file=sys.stderr)
