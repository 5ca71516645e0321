"""What every config dataclass checks: a field against its annotation, in one line naming the field and the fix."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

from multitoken.errors import ConfigError

SEED_LIMIT = 2 ** 63  # torch.manual_seed and numpy both take any seed in [0, 2**63)


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def conforms(value: Any, hint: Any) -> bool:
    """Whether value fits a field annotation: the subset of typing the config dataclasses use."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an integer is a fine float (YAML writes 1 for 1.0); NaN and infinity are not
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    return dataclasses.is_dataclass(hint) and isinstance(value, hint)


def describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return "a list of " + {float: "finite numbers", int: "integers", str: "strings"}.get(args[0], "values")
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def check_types(config: Any, prefix: str) -> None:
    """Every field of a config dataclass against its annotation, so that library callers and saved configs get the
    checks the command line gives (`TrainConfig(precision="fp16")` must not silently train in fp32)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        require(conforms(value, hints[f.name]),
                 f"{prefix}{f.name} must be {describe(hints[f.name])} (got {value!r})")



def int_list(text: str, flag: str, example: str = "1,2,4") -> list[int]:
    """A comma-separated list of positive integers given to an option, or a one-line error naming it."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, e.g. {example} (got {text!r})") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} needs positive integers (got {text!r})")
    return values
