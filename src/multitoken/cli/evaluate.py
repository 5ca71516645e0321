"""`multitoken eval`: per-head validation loss and top-1 accuracy of a checkpoint."""

from __future__ import annotations

from types import SimpleNamespace
from jsonargparse import Namespace

from multitoken.cli.common import call, command_parser, print_json


def add_parser(subcommands) -> None:
    parser = command_parser(evaluate_checkpoint)
    subcommands.add_subcommand("eval", parser, help="Evaluate a checkpoint per head.")


def evaluate_checkpoint(ckpt: str, data: str | list[str] | None = None, batches: int | None = None, batch_size: int | None = None,
                        json: bool = False, device: str = "auto") -> int:
    """Per-head validation loss and top-1 accuracy of a checkpoint, as a table or JSON.

    Args:
        ckpt: Checkpoint directory (runs/NAME/checkpoints/step_N) or run directory (its newest checkpoint).
        data: Text file or folder to evaluate on (all of it); the checkpoint's own training data (the same paths)
            gives its validation split. Default: the built-in corpus's validation split, for checkpoints trained on
            it.
        batches: Batches of windows to evaluate, spread over the data; default: the run's eval_batches.
        batch_size: Windows per batch; default: the run's batch_size.
        json: Print JSON instead of a table.
        device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'.
    """
    return _run(SimpleNamespace(**locals()))  # the options as one object, for the steps below


def run(args: Namespace) -> int:
    return call(evaluate_checkpoint, args)


def _run(args: SimpleNamespace) -> int:
    from multitoken.data.batches import eval_batches
    from multitoken.data.tokens import resolve_data, user_data_config
    from multitoken.errors import ConfigError, DataError
    from multitoken.checkpoint import load_checkpoint, resolve_checkpoint
    from multitoken.training.evaluate import evaluate, format_eval_table
    from multitoken.training.runtime import resolve_device

    device = resolve_device(args.device)
    ckpt = resolve_checkpoint(args.ckpt)
    model, cfg, tokenizer = load_checkpoint(ckpt, device)
    batch_size = cfg.batch_size if args.batch_size is None else args.batch_size
    num_batches = cfg.eval_batches if args.batches is None else args.batches
    if batch_size < 1 or num_batches < 1:
        raise ConfigError(f"--batch-size and --batches must be at least 1 (got {batch_size} and {num_batches})")
    window = min(cfg.window_tokens, model.config.max_seq_len) + model.n_future
    paths = [args.data] if isinstance(args.data, str) else args.data
    data_cfg = user_data_config(cfg.data, paths, "--data")
    if data_cfg.path == cfg.data.path:  # the data it was trained on: its validation split
        batches = eval_batches(resolve_data(data_cfg, tokenizer)[1].val, batch_size, window, num_batches)
        source = "validation split of the training data"
    else:  # the user's files, all of them: windows from both sides of the cache's split, in proportion to their size
        data = resolve_data(data_cfg, tokenizer)[1]
        parts = [part for part in (data.train, data.val) if len(part) >= window] or [data.train]
        total = sum(len(part) for part in parts)
        if total == 0:
            raise DataError(f"--data {' '.join(map(str, paths))} holds no text to evaluate on")
        batches = [batch for part in parts for batch in
                   eval_batches(part, batch_size, window, max(1, round(num_batches * len(part) / total)))]
        source = str(args.data)
    result = evaluate(model, batches, device, cfg.precision, byte_level=tokenizer.kind == "bytes",
                      eot_id=tokenizer.eot_id if cfg.data.mask_documents else None)
    result.update(checkpoint=str(ckpt), data=source)
    if args.json:
        print_json(result)
    else:
        print(f"{ckpt}  on {source}, {result['tokens']:,} positions per head")
        print(format_eval_table(result))
    return 0
