"""`multitoken train`: a training run configured by the TrainConfig schema (YAML via --config, dotted overrides)."""

from __future__ import annotations

from jsonargparse import ActionConfigFile, Namespace

from multitoken.cli.common import new_parser
from multitoken.config import TrainConfig, from_dict

DESCRIPTION = """Train a multi-token prediction model. With no arguments: the built-in default run, a byte-level
n_future=4 model on this Python's standard library source (about 7 minutes on 2 CPU cores), saved under
runs/default. Settings come from the defaults, then --config FILE.yaml, then dotted overrides such as
--model.n_future 2 --optim.lr 3e-4 --max_steps 100, in that order. Train on your own text with --data PATH
(short for --data.path: a file, a folder, or a list '[a, b]'); continue a stopped run with --resume."""

BOOL_FLAGS = ("--resume", "--compile", "--progress")


def add_parser(subcommands) -> None:
    parser = new_parser(DESCRIPTION)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the settings below.")
    parser.add_class_arguments(TrainConfig, None, fail_untyped=True)
    subcommands.add_subcommand("train", parser, help="Train a model (default: the built-in byte-level run).")


def normalize_argv(argv: list[str]) -> list[str]:
    """Shorthands users expect: boolean settings given bare (`--resume` for `--resume true`), dashes for underscores
    (`--init-from`), and `--data PATH` for `--data.path PATH` (jsonargparse would otherwise read `--data` as a YAML
    file for the data group)."""
    out = []
    for i, arg in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        bare = nxt is None or nxt.startswith("-")
        if arg.startswith("--") and "-" in arg[2:].split("=")[0]:  # --init-from reads as --init_from
            name, eq, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + eq + value
        if arg in BOOL_FLAGS and bare:
            arg = f"{arg}=true"
        elif arg == "--data":
            arg = "--data.path"
        elif arg.startswith("--data="):
            arg = "--data.path=" + arg.removeprefix("--data=")
        out.append(arg)
    return out


def config_from_args(args: Namespace) -> TrainConfig:
    values = args.as_dict()
    values.pop("config", None)
    values.pop("__path__", None)
    return from_dict(TrainConfig, values)


def run(args: Namespace) -> int:
    from multitoken.training.trainer import train  # torch import deferred: `--help` stays instant

    cfg = config_from_args(args)
    result = train(cfg)
    if result is None:  # a worker rank of a distributed run: rank 0 reports
        return 0
    print(f"\nvalidation after {result['step']} steps ({result['tokens_seen']:,} tokens):")
    print(result["table"])
    print(f"\ncheckpoint: {result['checkpoint']}")
    print(f"sample it:  multitoken generate --ckpt {cfg.out_dir} --prompt 'def '")
    return 0
