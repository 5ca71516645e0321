"""Shared pieces of the subcommands: the parser type, parsers made from functions, output helpers."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, set_parsing_settings

from multitoken.cli.spellings import OneNameHelpFormatter
from multitoken.config import int_list  # noqa: F401  (re-exported: the subcommands' comma-separated options)

# The config dataclasses document each field in a docstring right below it; this makes those texts the --help.
set_parsing_settings(docstring_parse_attribute_docstrings=True)


def new_parser(description: str, prog: str | None = None) -> ArgumentParser:
    # exit_on_error=False: parse errors come back as exceptions, and main() prints them as one line.
    # allow_abbrev=False: a misspelt key such as --model.n_futur must be an error, not a silent prefix match.
    return ArgumentParser(description=description, prog=prog, exit_on_error=False, allow_abbrev=False,
                          env_prefix="MULTITOKEN", default_env=False, formatter_class=OneNameHelpFormatter)


def command_parser(fn: Callable, skip: tuple[str, ...] = ()) -> ArgumentParser:
    """A subcommand's parser made from the function it runs: one option per parameter, its type and default from
    the signature and its help from the docstring's Args section; the docstring's text before Args describes the
    command. `skip`: parameters declared by hand (a positional argument)."""
    doc = inspect.getdoc(fn) or ""
    parser = new_parser(" ".join(doc.split("\nArgs:")[0].split()))
    parser.add_function_arguments(fn, as_group=False, skip=set(skip), fail_untyped=True)
    return parser


def call(fn: Callable, args: Any) -> Any:
    """Run a subcommand's function on its parsed options."""
    return fn(**{name: args[name] for name in inspect.signature(fn).parameters})


def add_command_group(subcommands, name: str, description: str, help: str):
    """A subcommand that holds subcommands (`bench decode`, `tokenizer train`); returns the inner group to add them
    to. jsonargparse needs the outer level registered before the inner one is filled."""
    parser = new_parser(description)
    subcommands.add_subcommand(name, parser, help=help)
    return parser.add_subcommands(required=True, dest=name)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=1)
    sys.stdout.write("\n")


def write_json(path: str, value: Any) -> None:
    """Write value as JSON to path (making its folder) and say so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(value, indent=1) + "\n")
    print(f"wrote {path}")


def require_positive(args: Any, *names: str) -> None:
    """Each named integer option must be at least 1; the error names the option as typed (--batch-size)."""
    from multitoken.errors import ConfigError

    for name in names:
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
