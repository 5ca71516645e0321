"""`multitoken bench ...`: benchmarks that compare side by side in one run and write JSON."""

from __future__ import annotations

import time
from pathlib import Path

from jsonargparse import Namespace

from multitoken.bench.train import CASES
from multitoken.cli.common import (add_ckpt_argument, add_command_group, add_device_argument, int_list, new_parser,
                                   require_positive, write_json)
from multitoken.cli.generate import add_speculative_arguments, check_prompt_fits, parse_tree
from multitoken.errors import ConfigError


def add_parser(subcommands) -> None:
    inner = add_command_group(subcommands, "bench", "Benchmarks: side-by-side comparisons in one run, as a table and "
                              "JSON.", "Benchmarks (decode, train).")

    decode = new_parser("Plain vs self-speculative decoding on the same prompts in one run, alternating: tokens/s "
                        "of each, the speedup, tau (tokens per forward), acceptance per draft position, and whether "
                        "the outputs were identical.")
    add_ckpt_argument(decode)
    decode.add_argument("--prompts", type=str | None, default=None,
                        help="A .jsonl file ({\"messages\": [...]} conversations or {\"prompt\": \"...\"} per "
                             "line) or a text file with one prompt per line; default: windows from the validation "
                             "split.")
    decode.add_argument("--chat", action="store_true",
                        help="Format each prompt with the model's chat template (conversations need it).")
    decode.add_argument("--ignore_eos", action="store_true",
                        help="Decode all --max-new-tokens even past the model's end-of-sequence token (default: a "
                             "row ends there, and tokens/s counts the tokens up to it).")
    decode.add_argument("--data", type=str | list[str] | None, default=None,
                        help="Text the validation-split prompts (and --tree auto's measurements) come from: the "
                             "checkpoint's training data, named again; default: the built-in corpus, for checkpoints "
                             "trained on it.")
    decode.add_argument("--num_prompts", type=int, default=8,
                        help="Prompts taken from the validation split (without --prompts).")
    decode.add_argument("--prompt_len", type=int, default=64,
                        help="Tokens per validation-split prompt (without --prompts).")
    decode.add_argument("--batch_size", type=str, default="1",
                        help="Prompts decoded together; a comma-separated list (1,2,4,8,16) runs a sweep, one record "
                             "per batch size.")
    decode.add_argument("--max_new_tokens", type=int, default=128, help="Tokens per prompt.")
    add_speculative_arguments(decode, auto=True)
    decode.add_argument("--temperature", type=float, default=0.0,
                        help="0 (greedy, the default) checks identical outputs; > 0 measures speculative sampling.")
    decode.add_argument("--repeats", type=int, default=3,
                        help="Timed rounds over all prompts, at least; each case's tokens/s is the median over "
                             "rounds, shown with its min-max.")
    decode.add_argument("--max_repeats", type=int | None, default=None,
                        help="Rounds are added, up to this many (default: twice --repeats), until the median ratio "
                             "to plain decoding moves less than 2 percent when a round comes in; the table says whether it "
                             "settled and whether every round's ratio fell on one side of 1.00x. Equal to --repeats: "
                             "exactly that many rounds.")
    decode.add_argument("--against_transformers", action="store_true",
                        help="Also time transformers' generate (greedy) on the same weights, exported as a "
                             "LlamaForCausalLM: plain decoding's tokens/s against it, and whether the tokens agree. "
                             "Needs transformers; works for next-token checkpoints too.")
    decode.add_argument("--json", type=str | None, default=None, help="Write the results to this JSON file.")
    decode.add_argument("--plot", type=str | None, default=None,
                        help="Draw a PNG plot of speedup and tokens/s against batch size here (needs matplotlib).")
    add_device_argument(decode)
    inner.add_subcommand("decode", decode, help="Plain vs self-speculative decoding.")

    train = new_parser("Training memory and speed in one run: next-token baseline (plain and chunked "
                       "cross-entropy) vs MTP naive, sequential and sequential + chunked, each case in its own "
                       "process, parameter-matched (same n_layer). Prints a table, writes JSON and a PNG plot.")
    train.add_argument("--vocab_size", type=str, default="32000,128000",
                       help="Vocabulary sizes, comma-separated.")
    train.add_argument("--n_future", type=str, default="4", help="MTP head counts, comma-separated.")
    train.add_argument("--d_model", type=int, default=256, help="Model width.")
    train.add_argument("--n_layer", type=int, default=6, help="All layers (trunk + heads).")
    train.add_argument("--n_head", type=int, default=4, help="Attention heads.")
    train.add_argument("--batch_size", type=int, default=4, help="Sequences per step.")
    train.add_argument("--seq_len", type=int, default=128, help="Tokens per sequence.")
    train.add_argument("--steps", type=int, default=3, help="Timed steps per case (after one warm-up step).")
    train.add_argument("--rounds", type=int, default=1,
                       help="Run every case this many times, alternating, and report each case's median tokens/s "
                            "(the ratios are of the medians; every round's tokens/s is in the JSON). Timings on a "
                            "shared machine drift.")
    train.add_argument("--cases", type=str, default=",".join(CASES),
                       help="Cases to run, comma-separated (at large sizes, ntp_chunked,mtp_chunked alone "
                            "compares speed without the slow memory-hungry ones).")
    train.add_argument("--json", type=str | None, default=None, help="Write the records to this JSON file.")
    train.add_argument("--plot", type=str | None, default=None, help="Draw a PNG plot here (needs matplotlib).")
    add_device_argument(train)
    inner.add_subcommand("train", train, help="Training memory and speed: next-token vs multi-token.")


def _prompts_from_file(path: str, tokenizer, chat: bool) -> list[list[int]]:
    from multitoken.data.prompts import encode_prompt, read_prompts

    return [encode_prompt(tokenizer, prompt, chat) for prompt in read_prompts(path)]


def _run_decode(args: Namespace) -> int:
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
    if model.n_future == 1 and not args.against_transformers:
        raise ConfigError(f"{ckpt} is a next-token-only model (no extra heads), so there is no speculative decoding "
                          "to compare: add --against-transformers to time plain decoding against transformers, or "
                          "give it heads (train --init-from it with --model.n_future 4 --freeze base)")
    k = check_draft_len(model, args.draft_len) if model.n_future > 1 else None
    reference = None
    if args.against_transformers:
        reference = _transformers_reference(ckpt, model, args.max_new_tokens, tokenizer.eot_id, device)
    prompts, source = _decode_prompts(args, model, cfg, tokenizer)
    if max(batch_sizes) > len(prompts):
        raise ConfigError(f"--batch-size {max(batch_sizes)} exceeds the {len(prompts)} prompts: give at least as many "
                          "prompts (--num-prompts, or lines in --prompts) as the largest batch")
    tree = None
    if model.n_future > 1 and args.tree != "auto":
        tree = parse_tree(args.tree, model, args.draft_len)
    print(f"benchmarking {ckpt} on {source}", flush=True)
    stop_ids = None if args.ignore_eos else torch.tensor([tokenizer.eot_id], device=device)
    results = []
    for batch_size in batch_sizes:
        choosing = None
        if model.n_future > 1 and args.tree == "auto":
            tree, choosing = _timed_auto_tree(model, cfg, tokenizer, batch_size, args, device)
        result = bench_decode(model, prompts, batch_size, args.max_new_tokens, k, args.temperature, args.repeats,
                              device=device, reference=reference, compile=args.compile, tree=tree,
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
    if args.against_transformers and args.temperature != 0:
        raise ConfigError("--against-transformers compares greedy decoding: leave --temperature at 0")
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
    tree = _auto_tree(model, cfg, tokenizer, batch_size, args, device)
    choosing = {"seconds": time.perf_counter() - start,
                "compile_seconds": total_compile_seconds(model) - compiled_before}
    print(f"  (choosing took {choosing['seconds']:.0f} s, {choosing['compile_seconds']:.0f} s of it compiling "
          "steps the benchmark reuses; none of it counted in tokens/s)", flush=True)
    return tree, choosing


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

    from multitoken.decoding.auto import choose_tree, head_ranks

    val = _validation_tokens(cfg, tokenizer, args)
    n = 16
    # Offset by half a spacing from the benchmark's windows, so the choice is not fitted to the measured prompts.
    spacing = (len(val) - args.prompt_len) / max(2 * n, 1)
    starts = (spacing + np.arange(n) * 2 * spacing).astype(np.int64)
    windows = torch.tensor(np.stack([val[s:s + args.prompt_len] for s in starts]).astype(np.int64), device=device)
    depth = model.n_future - 1
    ranks = head_ranks(model, windows, args.max_new_tokens, depth)
    rows = windows[torch.arange(batch_size) % n]  # the choice is decoded end to end at the benchmark's batch size
    choice = choose_tree(model, ranks, batch_size, args.prompt_len + args.max_new_tokens, args.compile,
                         prompts=rows, max_new_tokens=args.max_new_tokens)
    tried = ", ".join(f"{r['nodes']} nodes {r['measured_speedup']:.2f}x" for r in choice.table if "measured_speedup" in r)
    print(f"--tree auto at batch size {batch_size}: {choice.tree.describe() if choice.tree.paths else 'plain decoding'}"
          f" (expected tau {choice.tau:.2f}, step {choice.step_us:.0f} us vs plain {choice.plain_step_us:.0f} us; "
          f"decoded end to end on validation windows: {tried or 'no tree promised 5% over plain'})", flush=True)
    return choice.tree


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


def _run_train(args: Namespace) -> int:
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
    return {"decode": _run_decode, "train": _run_train}[args.bench](args[args.bench])
