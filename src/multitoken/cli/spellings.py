"""The spellings every option accepts, declared on the parser once it is built (the command line is parsed exactly as
typed, never rewritten first).

- Dashes or underscores: options are declared with underscores (`--max_new_tokens`, `--model.n_future`), and the
  dashed spelling (`--max-new-tokens`, `--model.n-future`) is registered as a second name of the same option.
- Bare booleans: a true/false setting given with no value (`--resume`) means true; `--resume false` still reads one.
- `--debug` anywhere: every subcommand knows it, so it may follow the subcommand's own options.
- Shorthands: an option that does what another does (`train --data PATH` for `--data.path PATH`).
"""

from __future__ import annotations

import argparse
import typing

from jsonargparse import DefaultHelpFormatter

DEBUG_HELP = "Show full tracebacks on errors."


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [p for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for p in dict.fromkeys(action.choices.values())]


def _is_bool(action: argparse.Action) -> bool:
    hint = getattr(action, "_typehint", None)
    return hint is bool or bool in typing.get_args(hint)  # bool | str (train --resume [PATH]) too


def _add_name(parser: argparse.ArgumentParser, action: argparse.Action, name: str) -> None:
    if name not in parser._option_string_actions:
        action.option_strings.append(name)
        parser._option_string_actions[name] = action


def shorthand(parser: argparse.ArgumentParser, name: str, target: str) -> None:
    """Make the option `name` do what `target` does with its value. The option object under `name` stays (a group's
    config loader, say: jsonargparse looks it up by destination when it fills in defaults); only what it does when
    given on the command line changes."""
    old, target_action = parser._option_string_actions[name], parser._option_string_actions[target]

    class Shorthand(type(old)):
        def __call__(self, parser, namespace, values, option_string=None):
            target_action(parser, namespace, values, target)

    old.__class__ = Shorthand
    old.help, old.metavar = f"Short for {target}.", target_action.metavar


def accept_spellings(parser: argparse.ArgumentParser) -> None:
    """Dashed names, bare booleans and --debug on this parser and every subcommand's, recursively."""
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    for action in list(parser._actions):
        for name in list(action.option_strings):
            if name.startswith("--") and "_" in name:
                _add_name(parser, action, name.replace("_", "-"))
        if _is_bool(action) and action.option_strings and action.nargs is None:
            action.nargs, action.const = "?", True
    for subparser in _subparsers(parser):
        accept_spellings(subparser)


class OneNameHelpFormatter(DefaultHelpFormatter):
    """--help lists each option under its declared name only (its dashed twin is implied, and said once, at the top)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        names = action.option_strings
        action.option_strings = [n for n in names if not (n != (twin := "--" + n[2:].replace("-", "_")) and twin in names)]
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = names
