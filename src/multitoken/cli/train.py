"""`multitoken train`: a training run configured by the TrainConfig schema (YAML via --config, dotted overrides)."""

from __future__ import annotations

from pathlib import Path

import yaml
from jsonargparse import ActionConfigFile, Namespace

from multitoken.cli.common import new_parser
from multitoken.cli.spellings import shorthand
from multitoken.config import TrainConfig, from_dict
from multitoken.errors import ConfigError

DESCRIPTION = """Train a multi-token prediction model. With no arguments: the built-in default run, a byte-level
n_future=4 model on this Python's standard library source (about 7 minutes on 2 CPU cores), saved under
runs/default. Settings come from the defaults, then --config FILE.yaml, then dotted overrides such as
--model.n_future 2 --optim.lr 3e-4 --max_steps 100, in that order. Train on your own text with --data PATH
(short for --data.path: a file, a folder, or a list '[a, b]'); continue a stopped run with --resume."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the YAML spec calls it an error; PyYAML would
    keep the last value silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{self.name} line {key_node.start_mark.line + 1}: {key!r} is given twice: keep one")
            seen.add(key)
        return super().construct_mapping(node, deep)


def check_config_file(value: str) -> None:
    """--config FILE: refuse an empty file and duplicate keys by name, before jsonargparse reads it."""
    path = Path(value)
    if not path.is_file():
        return  # a missing file or inline YAML: jsonargparse's own message
    text = path.read_text(encoding="utf-8", errors="replace")
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        values = loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    finally:
        loader.dispose()
    if values is None:
        raise ConfigError(f"--config {path} is empty: write settings in it (e.g. `max_steps: 100`) or drop --config")


class CheckedConfigFile(ActionConfigFile):
    def __call__(self, parser, cfg, values, option_string=None):
        check_config_file(values)
        super().__call__(parser, cfg, values, option_string)


def add_parser(subcommands) -> None:
    parser = new_parser(DESCRIPTION)
    parser.add_argument("--config", action=CheckedConfigFile, help="YAML file with any of the settings below.")
    parser.add_class_arguments(TrainConfig, None, fail_untyped=True)
    # `--data PATH` is short for `--data.path PATH` (jsonargparse would read `--data` as a YAML file for the group).
    shorthand(parser, "--data", "--data.path")
    subcommands.add_subcommand("train", parser, help="Train a model (default: the built-in byte-level run).")


def config_from_args(args: Namespace) -> TrainConfig:
    values = args.as_dict()
    for key in ("config", "__path__", "debug"):  # the parser's own options, not settings
        values.pop(key, None)
    return from_dict(TrainConfig, values)


def run(args: Namespace) -> int:
    from multitoken.training.trainer import train  # torch import deferred: `--help` stays instant

    cfg = config_from_args(args)
    if cfg.init_from:
        from multitoken.training.surgery import check_fixed_fields

        check_fixed_fields(cfg.model, cfg.init_from)
    result = train(cfg)
    if result is None:  # a worker rank of a distributed run: rank 0 reports
        return 0
    print(f"\nvalidation after {result['step']} steps ({result['tokens_seen']:,} tokens):")
    print(result["table"])
    print(f"\ncheckpoint: {result['checkpoint']}")
    from multitoken.data.tokenizer import load_tokenizer

    chat = bool(load_tokenizer(Path(result["checkpoint"])).chat_template)
    print(f"sample it:  multitoken generate --ckpt {cfg.out_dir} "
          + ("--chat --prompt 'Hello!'" if chat else "--prompt 'def '"))
    return 0
