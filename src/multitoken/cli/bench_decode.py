"""`multitoken bench decode`'s run: settings checked before anything loads, the prompts, --tree auto's choice, the
references (transformers, llama.cpp), and the results written; and the pieces `bench serve` shares (its prompts,
the output paths checked up front)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from jsonargparse import Namespace

from multitoken.cli.common import int_list, require_positive, write_json
from multitoken.cli.generate import check_prompt_fits
from multitoken.decoding.draft_options import parse_tree
from multitoken.errors import ConfigError


def _prompts_from_file(path: str, tokenizer, chat: bool) -> list[list[int]]:
    from multitoken.data.prompts import encode_prompt, read_prompts

    return [encode_prompt(tokenizer, prompt, chat) for prompt in read_prompts(path)]


def run_decode(args: SimpleNamespace) -> int:
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
    prompts, source = decode_prompts(args, model, cfg, tokenizer)
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
    check_outputs(args.json, args.plot)
    return batch_sizes


def decode_prompts(args: Namespace, model, cfg, tokenizer) -> tuple[list[list[int]], str]:
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


def check_outputs(json_path: str | None, plot_path: str | None, plot_example: str = "decode.png") -> None:
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
