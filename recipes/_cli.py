"""What every recipe's ``@hydra.main`` shares: bad input becomes one line on stderr and exit code 2.

Bad input is exactly: a :class:`mlcost_pl.errors.UserInputError` (raised where input is checked), a config error
(OmegaConf: a missing or mistyped key, an interpolation that does not resolve; Hydra: a ``_target_`` that does not
exist), or a ``ValueError``/``TypeError`` raised by the constructor Hydra was calling for a config node (its argument
checks). Everything else (a shape bug in ``training_step``, an ONNX parity failure, an I/O error) keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from mlcost_pl.errors import UserInputError, builtin_name

T = TypeVar("T")

_CONSTRUCTOR_FRAMES = ("__init__", "__post_init__", "__new__")


def _chain(err: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and seen not in out:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def _raised_in_constructor(err: BaseException) -> bool:
    """True when ``err`` was raised directly in the body of a constructor (its own argument checks)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_name in _CONSTRUCTOR_FRAMES


def user_error(err: BaseException) -> BaseException | None:
    """The user-input or config error behind ``err``, or None when ``err`` is a bug that needs its traceback.

    Example:
        >>> user_error(RuntimeError("wrapped")) is None
        True
        >>> type(user_error(UserInputError("data.root: no such directory"))).__name__
        'UserInputError'
    """
    chain = _chain(err)
    for e in chain:
        if isinstance(e, UserInputError):
            return e
    try:
        from hydra.errors import InstantiationException
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # pragma: no cover - the recipes need Hydra anyway
        return None
    for i, e in enumerate(chain):
        if isinstance(e, OmegaConfBaseException):
            return e
        if isinstance(e, InstantiationException):
            cause = chain[i + 1] if i + 1 < len(chain) else None
            if cause is None or str(e).startswith("Error locating target"):
                return e
            if isinstance(cause, (ValueError, TypeError)) and _raised_in_constructor(cause):
                return e
    return None


def run_cli(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn``; on bad input print ``error: <Type>: <cause>`` and exit 2 (``HYDRA_FULL_ERROR=1`` re-raises)."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - re-raised unless it is bad input
        cause = user_error(err)
        if cause is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = " ".join(str(cause).split())
        label = builtin_name(cause) if isinstance(cause, UserInputError) else type(cause).__name__
        print(f"error: {label}: {message}", file=sys.stderr)
        sys.exit(2)


def one_line_per_log_message() -> None:
    """Print each Lightning log message once: ``import lightning`` adds its own console handler and still propagates
    to the root logger, where Hydra has installed its console (and run-folder file) handlers, so every message showed
    twice. Call after importing Lightning; keeps Hydra's handlers (the file log in the run folder included)."""
    import logging

    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            if type(handler) is logging.StreamHandler:
                log.removeHandler(handler)
        log.propagate = True


def positional_command(argv: list[str], commands: tuple[str, ...]) -> list[str]:
    """``prog report url=...`` -> ``prog command=report url=...``: Hydra takes only ``key=value`` overrides."""
    if len(argv) > 1 and argv[1] in commands:
        return [argv[0], f"command={argv[1]}", *argv[2:]]
    return argv
