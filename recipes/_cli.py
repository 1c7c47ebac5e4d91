"""What every recipe's ``@hydra.main`` shares: bad input becomes one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Errors that mean "the input is wrong", reported as one line instead of a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError)


def user_error(err: BaseException) -> BaseException | None:
    """The user-input error behind ``err`` (unwrapping Hydra's InstantiationException), or None."""
    seen = err
    while seen is not None:
        if isinstance(seen, USER_ERRORS) and type(seen).__module__ != "hydra.errors":
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def run_cli(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn``; on a user-input error print ``error: <cause>`` and exit 2 (``HYDRA_FULL_ERROR=1`` re-raises)."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - re-raised unless it is bad input
        cause = user_error(err)
        if cause is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = " ".join(str(cause).split())
        print(f"error: {type(cause).__name__}: {message}", file=sys.stderr)
        sys.exit(2)


def positional_command(argv: list[str], commands: tuple[str, ...]) -> list[str]:
    """``prog report url=...`` -> ``prog command=report url=...``: Hydra takes only ``key=value`` overrides."""
    if len(argv) > 1 and argv[1] in commands:
        return [argv[0], f"command={argv[1]}", *argv[2:]]
    return argv
