"""`multitoken bench ...`: benchmarks that compare side by side in one run and write JSON."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from jsonargparse import Namespace

from multitoken.bench.train import CASES
from multitoken.cli.common import add_command_group, call, command_parser, int_list, require_positive, write_json
from multitoken.cli.generate import check_prompt_fits, parse_tree
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
    return _run_decode(options)


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
    from multitoken.bench.serve import CASES, bench_serve_cases, plot as plot_serve, report
    from multitoken.checkpoint import load_checkpoint, read_train_config, resolve_checkpoint

    names = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown or not names:
        raise ConfigError(f"--cases {cases!r}: choose among {', '.join(CASES)} (comma-separated)")
    if requests is not None and duration is not None:
        raise ConfigError("--requests and --duration: give one (a count of requests, or seconds of load)")
    if duration is not None and not duration > 0:
        raise ConfigError(f"--duration must be a positive number of seconds (got {duration})")
    requests = 256 if requests is None and duration is None else requests
    require_positive(SimpleNamespace(clients=clients, requests=requests, max_new_tokens=max_new_tokens,
                                     max_batch_size=max_batch_size), "clients", "max_new_tokens", "max_batch_size",
                     *(["requests"] if requests is not None else []))
    _check_outputs(json, plot, "serve.png")
    model, _, tokenizer = load_checkpoint(ckpt, "cpu")
    if {"speculative", "auto"} & set(names) and model.n_future == 1:  # the server drafts with heads alone
        raise ConfigError(f"{ckpt} has no extra heads: keep to --cases plain,'one at a time', or give it heads first")
    args = SimpleNamespace(prompts=prompts, chat=chat, data=data, num_prompts=num_prompts, prompt_len=prompt_len,
                           max_new_tokens=max_new_tokens)
    ids, source = _decode_prompts(args, model, read_train_config(resolve_checkpoint(ckpt)), tokenizer)
    del model
    # A count of requests: that many bodies, each sent once; a duration: one per prompt, sent over and over
    bodies = [{"prompt": ids[i % len(ids)], "max_tokens": max_new_tokens, "temperature": 0}
              for i in range(requests if duration is None else len(ids))]
    load = f"{requests} requests from {clients} clients" if duration is None else \
        f"{clients} clients sending requests for {duration:g} s"
    print(f"benchmarking the server on {ckpt}: {load} ({source}), up to {max_new_tokens} new tokens each, batch "
          f"{max_batch_size}")
    results = bench_serve_cases(ckpt, bodies, "/v1/completions", clients, max_batch_size, names, context, device,
                                compile, duration)
    print(report(results))
    if json:
        write_json(json, {"ckpt": str(ckpt), "prompts": source, "clients": clients, "requests": requests,
                          "duration_s": duration, "max_new_tokens": max_new_tokens, "max_batch_size": max_batch_size,
                          "compile": compile, "cases": results})
    if plot:
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        plot_serve(results, plot)
        print(f"wrote {plot}")
    return 0


def _prompts_from_file(path: str, tokenizer, chat: bool) -> list[list[int]]:
    from multitoken.data.prompts import encode_prompt, read_prompts

    return [encode_prompt(tokenizer, prompt, chat) for prompt in read_prompts(path)]


def _run_decode(args: SimpleNamespace) -> int:
    import torch

    from multitoken.bench.decode import bench_decode
    from multitoken.bench.decode_report import format_decode_table
    from multitoken.decoding.speculative import check_draft_len
    from multitoken.checkpoint import load_checkpoint, resolve_checkpoint
    from multitoken.training.runtime import resolve_device

    batch_sizes = _check_decode_settings(args)
    device = resolve_device(args.device)
    ckpt = resolve_checkpoint(args.ckpt)
    model, cfg, tokenizer = load_checkpoint(ckpt, device)
    tree = None if args.tree == "auto" else parse_tree(args.tree, model, args.draft_len, args.temperature)
    no_heads = tree is not None and (not tree.paths or tree.drafter)  # no heads: copies alone, or the drafter
    if args.tree == "chain" and tree is None and model.n_future == 1 and not (args.against_transformers or
                                                                         args.against_llama_cpp):
        raise ConfigError(f"{ckpt} is a next-token-only model (no extra heads), so there is no speculative decoding "
                          "to compare: add --against-transformers to time plain decoding against transformers, "
                          "--tree \"lookup 4\" (or auto) to draft from the context, or give it heads (train "
                          "--init-from it with --model.n_future 4 --freeze base)")
    if model.n_future == 1 and args.tree == "auto" and args.temperature > 0:
        raise ConfigError("--tree auto on a next-token model drafts by copying from the context, which is verified "
                          "greedily: use --temperature 0")
    k = check_draft_len(model, args.draft_len) if model.n_future > 1 and not no_heads else None
    references = {}
    if args.against_transformers:
        references["transformers"] = _transformers_reference(ckpt, model, args.max_new_tokens, tokenizer.eot_id,
                                                             device)
    if args.against_llama_cpp:
        from multitoken.bench.decode import llama_cpp_decoder

        if not Path(args.against_llama_cpp).is_file():
            raise ConfigError(f"--against-llama-cpp {args.against_llama_cpp} is not a file: give a .gguf of the "
                              "model's weights")
        references["llama.cpp"] = llama_cpp_decoder(args.against_llama_cpp, args.max_new_tokens,
                                                    model.config.max_seq_len, torch.get_num_threads())
    prompts, source = _decode_prompts(args, model, cfg, tokenizer)
    if max(batch_sizes) > len(prompts):
        raise ConfigError(f"--batch-size {max(batch_sizes)} exceeds the {len(prompts)} prompts: give at least as many "
                          "prompts (--num-prompts, or lines in --prompts) as the largest batch")
    print(f"benchmarking {ckpt} on {source}", flush=True)
    stop_ids = None if args.ignore_eos else torch.tensor(tokenizer.stop_ids, device=device)
    results = []
    for batch_size in batch_sizes:
        choosing = None
        if args.tree == "auto":  # a next-token model: copies from the context alone
            tree, choosing = _timed_auto_tree(model, cfg, tokenizer, batch_size, args, device)
        result = bench_decode(model, prompts, batch_size, args.max_new_tokens, k, args.temperature, args.repeats,
                              device=device, references=references, compile=args.compile, tree=tree,
                              stop_ids=stop_ids, max_repeats=args.max_repeats)
        result.update(checkpoint=str(ckpt), prompts=source, tree_requested=args.tree)
        if choosing is not None:
            result["tree_choice"] = choosing
        print(format_decode_table(result), flush=True)
        results.append(result)
    _write_decode_results(results, args)
    return 0


def _check_decode_settings(args: Namespace) -> list[int]:
    """The batch sizes, after refusing settings that cannot run (before any model is loaded)."""
    require_positive(args, "num_prompts", "prompt_len", "max_new_tokens", "repeats")
    if args.max_repeats is not None and args.max_repeats < args.repeats:
        raise ConfigError(f"--max-repeats ({args.max_repeats}) must be at least --repeats ({args.repeats})")
    if args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0 (got {args.temperature}); 0 is greedy")
    if (args.against_transformers or args.against_llama_cpp) and args.temperature != 0:
        raise ConfigError("--against-transformers and --against-llama-cpp compare greedy decoding: leave "
                          "--temperature at 0")
    if args.chat and args.prompts is None:
        raise ConfigError("--chat formats the prompts of a --prompts file: give one (a .jsonl of conversations, or "
                          "one user message per line)")
    batch_sizes = int_list(args.batch_size, "--batch-size", "1,2,4,8,16")
    _check_outputs(args.json, args.plot)
    return batch_sizes


def _decode_prompts(args: Namespace, model, cfg, tokenizer) -> tuple[list[list[int]], str]:
    """The benchmark's prompts (token lists) and where they came from: a --prompts file, or validation windows."""
    import numpy as np

    context = model.config.max_seq_len
    if args.prompts is not None:
        prompts = _prompts_from_file(args.prompts, tokenizer, args.chat)
        source = args.prompts + (" (chat template)" if args.chat else "")
    else:
        val = _validation_tokens(cfg, tokenizer, args)
        check_prompt_fits(args.prompt_len, args.max_new_tokens, context, "--prompt-len")
        if len(val) < args.prompt_len:
            where = f"--data {args.data}" if args.data else "the built-in corpus"
            raise ConfigError(f"the validation split of {where} holds {len(val)} tokens, fewer than --prompt-len "
                              f"{args.prompt_len}: " + ("give more text with --data, or " if len(val) else
                                                        "give text with --data, or ") +
                              "a smaller --prompt-len, or your own prompts with --prompts FILE")
        starts = np.linspace(0, len(val) - args.prompt_len, args.num_prompts).astype(np.int64)
        prompts = [val[s:s + args.prompt_len].astype(np.int64).tolist() for s in starts]
        source = f"validation split, {args.num_prompts} windows of {args.prompt_len} tokens"
    for i, ids in enumerate(prompts):
        check_prompt_fits(len(ids), args.max_new_tokens, context, f"prompt {i + 1}")
    return prompts, source


def _timed_auto_tree(model, cfg, tokenizer, batch_size: int, args: Namespace, device):
    """--tree auto's choice for this batch size, and how long choosing took (it compiles the steps the benchmark
    then reuses: reported apart, never counted in tokens/s)."""
    from multitoken.decoding.static import total_compile_seconds

    start, compiled_before = time.perf_counter(), total_compile_seconds(model)
    choice = _auto_tree(model, cfg, tokenizer, batch_size, args, device)
    choosing = {"seconds": time.perf_counter() - start,
                "compile_seconds": total_compile_seconds(model) - compiled_before,
                "table": choice.table}  # every size considered: its tree, expected tau, step time, speedups
    print(f"  (choosing took {choosing['seconds']:.0f} s, {choosing['compile_seconds']:.0f} s of it compiling "
          "steps the benchmark reuses; none of it counted in tokens/s)", flush=True)
    return choice.tree, choosing


def _write_decode_results(results: list[dict], args: Namespace) -> None:
    """A sweep's summary table, the JSON and the plot."""
    if len(results) > 1 and "speedup" in results[0]:
        print("\nbatch size  speedup  tau   tree nodes")
        for r in results:
            print(f"{r['batch_size']:>10}  {r['speedup']:>6.2f}x  {r['tau']:.2f}  {r['tree_nodes']:>10}")
    if args.json:
        write_json(args.json, results[0] if len(results) == 1 else results)
    if args.plot:
        if "speedup" not in results[0]:
            raise ConfigError("--plot draws speculative speedups, and this checkpoint has no extra heads")
        from multitoken.bench.decode_report import plot_decode
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_decode(results, args.plot)
        print(f"wrote {args.plot}")


def _check_outputs(json_path: str | None, plot_path: str | None, plot_example: str = "decode.png") -> None:
    """Refuse unusable output paths before a long benchmark, not after it."""
    for flag, path, example in (("--json", json_path, "bench.json"), ("--plot", plot_path, plot_example)):
        if path and Path(path).is_dir():
            raise ConfigError(f"{flag} {path} is a directory: give a file name, e.g. {path.rstrip('/')}/{example}")
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot needs matplotlib: pip install 'multitoken[bench]'") from None


def _validation_tokens(cfg, tokenizer, args):
    """The validation split of the data the user named (--data), or of the built-in corpus."""
    from multitoken.data.tokens import resolve_data, user_data_config

    paths = [args.data] if isinstance(args.data, str) else args.data
    try:
        data_cfg = user_data_config(cfg.data, paths, "--data")
    except ConfigError as e:
        raise ConfigError(f"{e}, or give your own prompts with --prompts FILE") from None
    return resolve_data(data_cfg, tokenizer)[1].val


def _auto_tree(model, cfg, tokenizer, batch_size: int, args, device):
    """--tree auto: the best tree for this batch size from validation windows apart from the benchmark's prompts."""
    import numpy as np
    import torch

    from multitoken.decoding.auto import choose_source

    val = _validation_tokens(cfg, tokenizer, args)
    n = 16
    # Offset by half a spacing from the benchmark's windows, so the choice is not fitted to the measured prompts.
    spacing = (len(val) - args.prompt_len) / max(2 * n, 1)
    starts = (spacing + np.arange(n) * 2 * spacing).astype(np.int64)
    windows = torch.tensor(np.stack([val[s:s + args.prompt_len] for s in starts]).astype(np.int64), device=device)
    rows = windows[torch.arange(batch_size) % n]  # the choice is decoded end to end at the benchmark's batch size
    choice = choose_source(model, windows, args.max_new_tokens, batch_size, args.compile, rows)
    tried = ", ".join(f"{r['nodes']} nodes{' (lookup ' + str(r['lookup']) + ')' if r.get('lookup') else ''} "
                      f"{r['measured_speedup']:.2f}x" for r in choice.table if "measured_speedup" in r)
    print(f"--tree auto at batch size {batch_size}: {choice.tree.describe()}"
          f" (expected tau {choice.tau:.2f}, step {choice.step_us:.0f} us vs plain {choice.plain_step_us:.0f} us; "
          f"decoded end to end on validation windows: {tried or 'no tree promised 5% over plain'})", flush=True)
    return choice


def _transformers_reference(ckpt, model, max_new_tokens: int, pad_id: int, device):
    """transformers' LlamaForCausalLM on this checkpoint's weights (exported to a temporary folder), as a decoder."""
    import tempfile

    from multitoken.bench.decode import transformers_decoder
    from multitoken.interop.export import export

    try:
        import transformers
    except ImportError:
        raise ConfigError("--against-transformers needs transformers: pip install transformers") from None
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        folder = export(ckpt, "hf", f"{tmp}/hf")
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=model.output.weight.dtype)
    return transformers_decoder(hf_model.to(device).eval(), max_new_tokens, pad_id)


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
    _check_outputs(args.json, args.plot, plot_example="train.png")
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
