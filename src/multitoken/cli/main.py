"""The `multitoken` console script: parse, dispatch to a subcommand, and turn user errors into one line.

A `MultitokenError` (bad path, bad config value, damaged checkpoint) or a parse error prints `error: ...` on one line and
exits 1 or 2; `--debug` anywhere on the command line shows the full traceback instead.
"""

from __future__ import annotations

import sys
import warnings

from multitoken.cli import (bench, chat, convert, distill, evaluate, experiment, export, generate, info, prepare,
                            serve, tokenizer, train)
from multitoken.cli.common import new_parser
from multitoken.cli.spellings import DEBUG_HELP, accept_spellings

COMMANDS = {"train": train, "generate": generate, "chat": chat, "eval": evaluate, "info": info, "bench": bench,
            "prepare": prepare, "distill": distill, "tokenizer": tokenizer, "convert": convert, "export": export,
            "experiment": experiment, "serve": serve}


def build_parser():
    parser = new_parser("Train and serve multi-token prediction language models (Gloeckle et al. 2024). Every option "
                        "takes dashes or underscores (--max-new-tokens, --max_new_tokens), and a true/false "
                        "setting given bare means true.", prog="multitoken")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subcommands = parser.add_subcommands(required=True, dest="command")
    for module in COMMANDS.values():
        module.add_parser(subcommands)
    accept_spellings(parser)
    return parser


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # read before parsing: a parse error shows its traceback too
    warnings.filterwarnings("ignore", module="jsonargparse")
    from jsonargparse import ArgumentError

    from multitoken.errors import MultitokenError

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return COMMANDS[args.command].run(args[args.command])
    except ArgumentError as e:
        if debug:
            raise
        print(f"error: {_one_line(str(e))} (see `multitoken {argv[0] if argv else ''} --help`)".replace("  ", " "),
              file=sys.stderr)
        return 2
    except MultitokenError as e:
        if debug:
            raise
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: completed checkpoints are intact; continue a training run with --resume", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an environment problem: still one line, with the way to see more
        if debug:
            raise
        print(f"error: {type(e).__name__}: {_one_line(str(e))[:500]} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
