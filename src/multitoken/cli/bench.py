"""`multitoken bench ...`: benchmarks that compare side by side in one run and write JSON."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from jsonargparse import Namespace

from multitoken.bench.train import CASES
from multitoken.cli.bench_decode import check_outputs
from multitoken.cli.common import add_command_group, call, command_parser, int_list, require_positive, write_json
from multitoken.errors import ConfigError


def add_parser(subcommands) -> None:
    inner = add_command_group(subcommands, "bench", "Benchmarks: side-by-side comparisons in one run, as a table and "
                              "JSON.", "Benchmarks (decode, train).")
    inner.add_subcommand("decode", command_parser(bench_decode), help="Plain vs self-speculative decoding.")
    inner.add_subcommand("train", command_parser(bench_train),
                         help="Training memory and speed: next-token vs multi-token.")
    inner.add_subcommand("serve", command_parser(bench_serve),
                         help="The server under concurrent load: speculative, plain, one at a time.")


def bench_decode(ckpt: str, prompts: str | None = None, chat: bool = False, ignore_eos: bool = False,
                 data: str | list[str] | None = None, num_prompts: int = 8, prompt_len: int = 64,
                 batch_size: str = "1", max_new_tokens: int = 128, draft_len: int | None = None,
                 tree: str = "chain", compile: bool = False, temperature: float = 0.0, repeats: int = 3,
                 max_repeats: int | None = None, against_transformers: bool = False,
                 against_llama_cpp: str | None = None, json: str | None = None,
                 plot: str | None = None, device: str = "auto") -> int:
    """Plain vs self-speculative decoding on the same prompts in one run, alternating: tokens/s of each, the
    speedup, tau (tokens per forward), acceptance per draft position, and whether the outputs were identical.

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest checkpoint).
        prompts: A .jsonl file ({"messages": [...]} conversations or {"prompt": "..."} per line) or a text file with
            one prompt per line; default: windows from the validation split.
        chat: Format each prompt with the model's chat template (conversations need it).
        ignore_eos: Decode all --max-new-tokens even past the model's end-of-sequence token (default: a row ends
            there, and tokens/s counts the tokens up to it).
        data: Text the validation-split prompts (and --tree auto's measurements) come from: the checkpoint's
            training data, named again; default: the built-in corpus, for checkpoints trained on it.
        num_prompts: Prompts taken from the validation split (without --prompts).
        prompt_len: Tokens per validation-split prompt (without --prompts).
        batch_size: Prompts decoded together; a comma-separated list (1,2,4,8,16) runs a sweep, one record per batch
            size.
        max_new_tokens: Tokens per prompt.
        draft_len: Tokens drafted per step by heads 2..k+1 (1..n_future-1); default n_future - 1.
        tree: Draft tree verified per step (greedy): 'chain' (each head's top guess, k drafts), 'auto' (the tree, or
            plain decoding, with the most tokens/s measured on validation data at this batch size, copies from the
            context included), or paths of candidate ranks such as "(0,), (1,), (0, 0)", optionally with tokens
            copied from the context on the first-choice path: "(0,), (1,), (0, 0), lookup 2" ("lookup 3" alone
            needs no heads). Sampling uses the chain of the heads.
        compile: Compile each decoding step with torch.compile (static shapes; inductor on CPU, CUDA graphs on
            CUDA), on both sides; compiling is reported apart and never counted in tokens/s.
        temperature: 0 (greedy, the default) checks identical outputs; > 0 measures speculative sampling.
        repeats: Timed rounds over all prompts, at least; each case's tokens/s is the median over rounds, shown with
            its min-max.
        max_repeats: Rounds are added, up to this many (default: twice --repeats), until the median ratio to plain
            decoding moves less than 2 percent when a round comes in; the table says whether it settled and whether
            every round's ratio fell on one side of 1.00x. Equal to --repeats: exactly that many rounds.
        against_transformers: Also time transformers' generate (greedy) on the same weights, exported as a
            LlamaForCausalLM: plain decoding's tokens/s against it, and whether the tokens agree. Needs
            transformers; works for next-token checkpoints too.
        against_llama_cpp: Also time llama.cpp's plain greedy decoding (llama-cpp-python, its batch-1 path, as many
            threads as torch uses) of this GGUF file, which should hold the same weights (an F32 GGUF of the model,
            e.g. from llama.cpp's convert_hf_to_gguf.py on `multitoken export --format hf`); identical tokens are
            checked, not assumed. Every max_new_tokens is decoded, as for transformers.
        json: Write the results to this JSON file.
        plot: Draw a PNG plot of speedup and tokens/s against batch size here (needs matplotlib).
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'.
    """
    options = SimpleNamespace(**locals())  # one object for the steps below, each of which reads a few of them
    from multitoken.cli.bench_decode import run_decode

    return run_decode(options)


def bench_train(vocab_size: str = "32000,128000", n_future: str = "4", d_model: int = 256, n_layer: int = 6,
                n_head: int = 4, batch_size: int = 4, seq_len: int = 128, steps: int = 3, rounds: int = 1,
                cases: str = ",".join(CASES), json: str | None = None, plot: str | None = None,
                device: str = "auto") -> int:
    """Training memory and speed in one run: next-token baseline (plain and chunked cross-entropy) vs MTP naive,
    sequential and sequential + chunked, each case in its own process, parameter-matched (same n_layer). Prints a
    table, writes JSON and a PNG plot.

    Args:
        vocab_size: Vocabulary sizes, comma-separated.
        n_future: MTP head counts, comma-separated.
        d_model: Model width.
        n_layer: All layers (trunk + heads).
        n_head: Attention heads.
        batch_size: Sequences per step.
        seq_len: Tokens per sequence.
        steps: Timed steps per case (after one warm-up step).
        rounds: Run every case this many times, alternating, and report each case's median tokens/s (the ratios
            are of the medians; every round's tokens/s is in the JSON). Timings on a shared machine drift.
        cases: Cases to run, comma-separated (at large sizes, ntp_chunked,mtp_chunked alone compares speed without
            the slow memory-hungry ones).
        json: Write the records to this JSON file.
        plot: Draw a PNG plot here (needs matplotlib).
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'.
    """
    return _run_train(SimpleNamespace(**locals()))


def bench_serve(ckpt: str, prompts: str | None = None, chat: bool = False, data: str | list[str] | None = None,
                num_prompts: int = 32, prompt_len: int = 64, clients: int = 32, requests: int | None = None,
                duration: float | None = None, max_new_tokens: int = 64, max_batch_size: int = 8,
                cases: str = "auto,speculative,plain,one at a time", context: int | None = None,
                compile: bool = False, json: str | None = None, plot: str | None = None, device: str = "auto") -> int:
    """The server under load on loopback: N concurrent clients each send their share of the requests (or requests
    for --duration seconds) one after another (streamed, greedy), against a fresh local server per case, all in one
    run. Reports requests/s, output tokens/s (and its ratio to serving one request at a time), time to first token
    and time per output token (p50, p90), the largest batch the engine ran, and whether every request was
    answered.

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest checkpoint).
        prompts: A .jsonl file ({"messages": [...]} or {"prompt": "..."} per line) or a text file with one prompt
            per line; default: windows from the validation split. Sent as token ids, so every case sees the same.
        chat: Format each prompt with the model's chat template.
        data: Text the validation-split prompts come from (the checkpoint's training data); default: the
            built-in corpus.
        num_prompts: Prompts taken from the validation split (without --prompts).
        prompt_len: Tokens per validation-split prompt (without --prompts).
        clients: Concurrent clients.
        requests: Requests in all, cycling through the prompts, shared among the clients (256 unless --duration).
        duration: Seconds of load instead of a count: each client sends requests, cycling through the prompts,
            until the time is up; requests under way then run to their end and are counted.
        max_new_tokens: max_tokens of every request (an answer may end sooner, at end-of-sequence).
        max_batch_size: The server's batch (the 'one at a time' case uses 1).
        cases: Comma-separated cases among 'auto' (the server's own per-step choice), 'speculative'
            (self-speculative decoding at every step), 'plain' (plain decoding at the full batch) and 'one at a time'
            (plain decoding, batch 1).
        context: The server's tokens per request; null for the model's.
        compile: Serve with compiled steps (`serve --compile`); compiling happens in each case's warm-up request,
            before the clock starts.
        json: Write every case's numbers (and each request's) here.
        plot: Write a PNG of tokens/s and the latency percentiles here.
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'.
    """
    from multitoken.cli.bench_serve import run_serve

    return run_serve(SimpleNamespace(**locals()))


def _run_train(args: SimpleNamespace) -> int:
    from multitoken.bench.train import format_train_table, measure, merge_rounds, plan, plot
    from multitoken.config import ModelConfig
    from multitoken.training.memory import check_fits, training_estimate
    from multitoken.training.runtime import resolve_device

    vocab_sizes = int_list(args.vocab_size, "--vocab-size", "32000,128000")
    cases = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        raise ConfigError(f"--cases takes a comma-separated subset of {','.join(CASES)} (got {args.cases!r})")
    n_futures = int_list(args.n_future, "--n-future")
    require_positive(args, "batch_size", "seq_len", "steps", "rounds")
    device = resolve_device(args.device)
    for n in [1, *n_futures]:  # validate every shape up front, with the config's own messages and memory estimate
        for vocab in vocab_sizes:
            config = ModelConfig(vocab_size=vocab, d_model=args.d_model, n_layer=args.n_layer, n_head=args.n_head,
                                 n_future=n, max_seq_len=args.seq_len)
            naive = n > 1 and "mtp_naive" in cases
            check_fits(training_estimate(config, args.batch_size, args.seq_len, chunked=False, all_heads_logits=naive),
                       device, f"bench train at --vocab-size {vocab}" + (f", --n-future {n}" if n > 1 else ""),
                       config, batch_flags="--batch-size / --seq-len", vocab_flag="--vocab-size")
    check_outputs(args.json, args.plot, plot_example="train.png")
    specs = plan(vocab_sizes, n_futures, cases, d_model=args.d_model, n_layer=args.n_layer, n_head=args.n_head,
                 batch_size=args.batch_size, seq_len=args.seq_len, steps=args.steps, device=str(device))
    if not specs:
        raise ConfigError(f"nothing to run: --cases {args.cases} are multi-token cases and --n-future {args.n_future} "
                          "has no value above 1; add a value such as --n-future 4, or a next-token case (ntp)")
    from tqdm.auto import tqdm

    runs = [(round_, spec) for round_ in range(args.rounds) for spec in specs]
    rounds: list[list[dict]] = [[] for _ in range(args.rounds)]
    for round_, spec in tqdm(runs, desc="bench train", unit="case", leave=False):
        rounds[round_].append(measure(spec))
    records = merge_rounds(rounds)
    print(format_train_table(records))
    if args.json:
        write_json(args.json, records)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(records, args.plot)
        print(f"wrote {args.plot}")
    return 0


def run(args: Namespace) -> int:
    command = {"decode": bench_decode, "train": bench_train, "serve": bench_serve}[args.bench]
    return call(command, args[args.bench])
