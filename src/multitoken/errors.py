"""User-facing errors.

Anything raised as a `MultitokenError` is a problem with the user's input (a path, a config value, a checkpoint)
rather than a bug: the CLI prints its message on one line and exits non-zero, without a traceback. Messages name
the input and say how to fix it.
"""


class MultitokenError(Exception):
    """A problem with the user's input, reported as one line by the CLI."""


class ConfigError(MultitokenError, ValueError):
    """An invalid configuration value. Subclasses ValueError so dataclass validation reads naturally."""


class CheckpointError(MultitokenError):
    """A checkpoint that is missing, incomplete or does not match what was asked of it."""


class DataError(MultitokenError):
    """Training or evaluation data that cannot be used (missing, empty, too short)."""


class TrainingError(MultitokenError):
    """A run that cannot go on: its loss or weights stopped being finite, or the disk filled up. The message says
    which checkpoint is intact and how to go on from it."""
