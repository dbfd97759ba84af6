"""Whose fault an error is, and how a command line says so: the one error boundary.

A *user error* is a mistake in what the user gave: a config key or value, a data file, a
checkpoint, a command-line argument. Its message names the file, key or value and says what to
do, so a command line prints that one line and exits with status 2 (the Unix convention for
bad usage, as argparse does), without a traceback. Any other exception is a bug (ours or a
library's): it keeps its full traceback, so that it can be reported.

An exception is a user error when

* it is a `UserError` (the validation layer `ntk._checks` raises `InvalidValue` and
  `InvalidType`, which are also ValueError and TypeError; a damaged checkpoint raises
  `ntk.lm.checkpoint.CheckpointError`), or
* it was raised inside a `user_input()` block (or a function decorated with `@user_input()`):
  the code that reads and checks the user's files (config, corpus, checkpoint) marks the
  ValueError, TypeError and OSError it lets through there, keeping their type, so Python
  callers catch what they always caught.

`TrainingDivergedError` lives here too, on the bottom floor (this module imports nothing of
ntk): `ntk.training`, `ntk.scaling`, `ntk.models` and `ntk.lm` raise or catch it without
depending on each other.

Every command line (`python -m ntk.lm.train`, the chapter scripts, `bench/run.py`) runs its
`main(argv)` through `run_cli`, and builds its parser with `ArgumentParser`, whose usage errors
are user errors too (one line instead of argparse's usage block). `--debug`, or the
environment variable NTK_DEBUG=1, shows the traceback of a user error as well.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

DEBUG_ENV = "NTK_DEBUG"
USAGE_EXIT = 2
_MARK = "_ntk_user_error"


class UserError(Exception):
    """A mistake in the user's input; the message names it and says what to do."""


class InvalidValue(UserError, ValueError):
    """A value of the right type but out of range (a ValueError)."""


class InvalidType(UserError, TypeError):
    """A value of the wrong type (a TypeError)."""


class MissingPackage(UserError, ImportError):
    """An optional package the user's settings need is not installed."""


class UsageError(UserError):
    """A command-line usage mistake (unknown option, missing argument)."""


class TrainingDivergedError(UserError, FloatingPointError):
    """The loss became NaN or Inf; `.step` is the number of updates done before it. A user
    error: the remedy is in the config (the learning rate, the parametrization)."""

    def __init__(self, step: int, loss: float) -> None:
        self.step, self.loss = step, loss
        super().__init__(
            f"training diverged: loss is {loss} at step {step} (after {step} updates); "
            "lower the learning rate or check the parametrization"
        )


# What the code that reads the user's files may raise about them.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError)


@contextlib.contextmanager
def user_input(*types: type[BaseException]) -> Iterator[None]:
    """Mark the exceptions of `types` (default: ValueError, TypeError, OSError) raised inside
    the block as user errors; they propagate unchanged otherwise."""
    caught = tuple(types) or INPUT_ERRORS
    try:
        yield
    except caught as err:
        with contextlib.suppress(AttributeError):  # a few C exceptions take no attributes
            setattr(err, _MARK, True)
        raise


def is_user_error(err: BaseException) -> bool:
    """True for a UserError or an exception marked by `user_input`."""
    return isinstance(err, UserError) or bool(getattr(err, _MARK, False))


def one_line(err: BaseException) -> str:
    """The message of `err` on one line (an OSError without text gets its errno text)."""
    text = str(err) or type(err).__name__
    return " ".join(text.split())


def debugging(argv: Sequence[str] = ()) -> bool:
    """--debug among the arguments or NTK_DEBUG set (to anything but "", "0" or "false")."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return "--debug" in argv or env not in ("", "0", "false", "no")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with --debug, and usage errors raised as `UsageError` (one line)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug",
            action="store_true",
            help=f"show the traceback of an input error too (or set {DEBUG_ENV}=1)",
        )

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def run_cli(
    main: Callable[[list[str]], object], argv: Sequence[str] | None = None, prog: str | None = None
) -> NoReturn:
    """Run `main(argv)` as a command: exit 0 (or main's int), or 2 with one line on stderr for
    a user error; a bug's exception propagates with its traceback (exit 1)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0])
    try:
        code = main(argv)
    except Exception as err:
        if not is_user_error(err) or debugging(argv):
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(USAGE_EXIT)
    sys.exit(code if isinstance(code, int) else 0)
