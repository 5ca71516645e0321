"""`multitoken generate`: sample from a checkpoint with the next-token head and a KV cache, optionally
self-speculatively with the model's extra heads."""

from __future__ import annotations

import sys
import time

from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser
from multitoken.decoding.draft_options import check_needs_speculative, parse_tree
from multitoken.errors import ConfigError
from multitoken.decoding.text import TextStream, until_eos


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                   seed: int = 0) -> None:
    if max_new_tokens < 0:
        raise ConfigError(f"--max-new-tokens must be >= 0 (got {max_new_tokens})")
    if temperature < 0:
        raise ConfigError(f"--temperature must be >= 0 (got {temperature}); 0 is greedy")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1 (got {top_k})")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1] (got {top_p})")
    if not 0 <= seed < 2 ** 63:
        raise ConfigError(f"--seed must be in [0, 2**63) (got {seed})")


def check_text(text: str, what: str) -> str:
    """Text from the command line arrives with undecodable bytes smuggled in as surrogates: refuse it by name."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} is not valid UTF-8 text: pass it in UTF-8 (check the terminal's encoding)") from None
    return text


def check_stops(stops: list[str] | None, tokenizer=None) -> list[str]:
    """--stop strings: non-empty, UTF-8, and writable by the model's tokenizer (a string its vocabulary cannot spell,
    such as a character it has no piece for, would never end the text)."""
    for stop in stops or []:
        if stop == "":
            raise ConfigError("--stop has an empty string, which would end the text before it starts: give each stop "
                              "string at least one character")
        check_text(stop, "--stop")
        if tokenizer is not None and stop not in tokenizer.decode(tokenizer.encode(stop)):
            raise ConfigError(f"--stop {stop!r} cannot occur in this model's output: its tokenizer has no tokens that "
                              "spell it; give a string the model can write")
    return list(stops or [])


def check_prompt_fits(n_tokens: int, max_new_tokens: int, context: int, what: str = "the prompt") -> None:
    if n_tokens == 0:
        raise ConfigError(f"{what} is empty: give it some text to continue")
    if n_tokens >= context:
        raise ConfigError(f"{what} is {n_tokens} tokens but the model's context is {context}: shorten it")
    if n_tokens + max_new_tokens > context:
        raise ConfigError(f"{what} ({n_tokens} tokens) + --max-new-tokens ({max_new_tokens}) exceeds the model's "
                          f"context of {context}: use --max-new-tokens {context - n_tokens} or less")


def add_parser(subcommands) -> None:
    subcommands.add_subcommand("generate", command_parser(generate_text), help="Generate text from a checkpoint.")


def run(args: Namespace) -> int:
    return call(generate_text, args)


def generate_text(ckpt: str, prompt: str, chat: bool = False, system: str | None = None,
                  stop: list[str] | None = None, stream: bool = True, ignore_eos: bool = False,
                  max_new_tokens: int = 200, temperature: float = 0.7, top_k: int | None = None,
                  top_p: float | None = 0.9, seed: int = 0, speculative: bool = False, draft_len: int | None = None,
                  tree: str = "chain", compile: bool = False, device: str = "auto") -> int:
    """Generate text from a checkpoint with the next-token head (KV-cached); with --speculative the extra heads draft
    tokens that the next-token head verifies (same output, fewer forwards).

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest checkpoint).
        prompt: Text to continue; with --chat, the user's message.
        chat: Treat --prompt as a user message and format it with the model's chat template (models converted from
            Hugging Face folders or GGUF files carry one); print only the answer.
        system: With --chat: a system message before the user's (default: the template's own, if any).
        stop: Strings that end the text (cut before the first one), e.g. --stop '["\\n\\n"]'.
        stream: Write the text as decoding accepts it (false: all at once at the end).
        ignore_eos: Keep generating past the model's end-of-sequence token (default: stop there).
        max_new_tokens: Tokens to generate.
        temperature: Sampling temperature; 0 is greedy.
        top_k: Sample among the k most likely.
        top_p: Nucleus sampling: keep the most likely tokens covering this probability; null for all.
        seed: Seed for sampling (same seed, same output).
        speculative: Self-speculative decoding with the model's own heads; prints statistics after the text.
        draft_len: Tokens drafted per step by heads 2..k+1 (1..n_future-1); default n_future - 1.
        tree: Draft tree verified per step (greedy): 'chain' (each head's top guess, k drafts), or paths of
            candidate ranks such as "(0,), (1,), (0, 0)", optionally with tokens copied from the context (what
            followed its last tokens where they occurred before) on the first-choice path: "(0,), (1,), (0, 0),
            lookup 2" ("lookup 3" alone needs no heads). Sampling uses the chain of the heads.
        compile: Compile each decoding step with torch.compile (static shapes; inductor on CPU, CUDA graphs on
            CUDA). The first call compiles (reported apart), later ones are faster.
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'.
    """
    import torch

    from multitoken.checkpoint import load_checkpoint
    from multitoken.decoding.speculative import check_draft_len
    from multitoken.training.runtime import resolve_device

    check_sampling(max_new_tokens, temperature, top_k, top_p, seed)
    check_needs_speculative(speculative, tree, draft_len)
    device = resolve_device(device)
    model, _, tokenizer = load_checkpoint(ckpt, device)
    draft_tree = parse_tree(tree, model, draft_len, temperature) if speculative else None
    heads_draft = draft_tree is None or (draft_tree.paths and not draft_tree.drafter)
    k = check_draft_len(model, draft_len) if speculative and heads_draft else None
    stops = check_stops(stop, tokenizer)
    ids = _prompt_ids(tokenizer, prompt, chat, system, ckpt)
    check_prompt_fits(len(ids), max_new_tokens, model.config.max_seq_len)
    stop_ids = None if ignore_eos else tokenizer.stop_ids
    text = _start_text(tokenizer, [] if chat else ids, stop_ids, stops)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=torch.Generator(device=device).manual_seed(seed),
                    stop_ids=None if stop_ids is None else torch.tensor(stop_ids, device=device),
                    on_tokens=text if stream else None)
    new, stats, elapsed, compiling = decode_timed(model, torch.tensor([ids], device=device), max_new_tokens,
                                                  speculative, k, draft_tree, compile, sampling)
    text.close(new[0].tolist())
    _report_speed(until_eos(new[0].tolist(), stop_ids)[1], elapsed, stats, _drafts(draft_tree, k, temperature),
                  compiling)
    return 0


def _start_text(tokenizer, prompt_ids: list[int], stop_ids, stops: list[str]) -> TextStream:
    """The text stream the answer is written through, after writing the prompt's own text (a continued prompt's,
    without its beginning-of-text token; none for a chat message)."""
    text_ids = prompt_ids[1:] if prompt_ids and tokenizer.bos_id is not None else prompt_ids
    sys.stdout.write(tokenizer.decode(text_ids))
    return TextStream(tokenizer, text_ids, stop_ids, stops)


def _drafts(tree, draft_len: int | None, temperature: float) -> str:
    """How the run drafted, for the line after the text."""
    if tree is None:
        return f"draft length {draft_len}"
    # sampling verifies a chain as deep as the tree (speculative_generate), greedy decoding the tree itself
    return f"draft length {tree.head_depth}" if temperature > 0 else tree.describe()


def decode_timed(model, prompt, max_new_tokens: int, speculative: bool, draft_len: int | None, tree, compile: bool,
                 sampling: dict):
    """New tokens, the speculative statistics (None for plain decoding), the seconds decoding took and, apart from
    them, the seconds spent compiling steps (a call at a new shape compiles)."""
    from multitoken.decoding import generate
    from multitoken.decoding.speculative import speculative_generate
    from multitoken.decoding.static import total_compile_seconds

    compiled_before, start = total_compile_seconds(model), time.perf_counter()
    if speculative:
        new, stats = speculative_generate(model, prompt, max_new_tokens, draft_len=draft_len, tree=tree,
                                          compile=compile, **sampling)
    else:
        new, stats = generate(model, prompt, max_new_tokens, compile=compile, **sampling), None
    compiling = total_compile_seconds(model) - compiled_before
    return new, stats, time.perf_counter() - start - compiling, compiling


def _report_speed(n_new: int, elapsed: float, stats, drafts: str, compiling: float) -> None:
    """The line after the text (on stderr): tokens/s (compiling apart), and for speculative decoding what the heads
    did."""
    summary = f"{n_new} tokens in {elapsed:.2f} s, {n_new / max(elapsed, 1e-9):.1f} tokens/s"
    if compiling > 0:
        summary += f" (compiling {compiling:.0f} s not counted)"
    if stats is not None:
        acceptance = " ".join(f"{a:.0%}" for a in stats.acceptance_per_position)
        summary += (f" | speculative, {drafts}: {stats.forwards} forwards, tau {stats.tau:.2f} "
                    f"tokens/forward, acceptance by draft position {acceptance}")
    print(f"[{summary}]", file=sys.stderr)


def _prompt_ids(tokenizer, prompt: str, chat: bool, system: str | None, ckpt: str = "the model") -> list[int]:
    """The prompt's tokens: a chat message through the model's template, or text after its beginning-of-text token
    (where it has one)."""
    if chat:
        from multitoken.data.chat import encode_chat

        if not tokenizer.chat_template:
            raise ConfigError(f"{ckpt}: this model's tokenizer has no chat template, so --chat has no format for the "
                              "message: leave out --chat to continue --prompt as text")
        messages = ([{"role": "system", "content": check_text(system, "--system")}] if system else []) + \
            [{"role": "user", "content": check_text(prompt, "--prompt")}]
        return encode_chat(tokenizer, messages)
    if system is not None:
        raise ConfigError("--system only applies with --chat: add --chat, or put the text in --prompt")
    return tokenizer.encode_prompt(check_text(prompt, "--prompt"))
