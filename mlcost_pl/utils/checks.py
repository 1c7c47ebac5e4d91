"""Constructor argument checks: a ``ValueError`` that names the user-facing argument and what it accepts.

``bool`` is rejected where a number is expected (``True`` is an ``int`` in Python), and strings are never coerced:
``poll_seconds="5"`` is a typo in a config, not a number.
"""

from __future__ import annotations

import math
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def check_int(name: str, value: Any, minimum: int = 1, allow_none: bool = False) -> int | None:
    """``value`` if it is an integer >= ``minimum`` (or ``None`` when allowed), else ``ValueError`` naming ``name``.

    Example:
        >>> check_int("check_every_n_steps", 2.5)
        Traceback (most recent call last):
        ...
        ValueError: check_every_n_steps must be an integer >= 1, got 2.5
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_number(name: str, value: Any, minimum: float = 0.0, strict: bool = True, allow_none: bool = False,
                 allow_inf: bool = False) -> float | None:
    """``float(value)`` if it is a number > ``minimum`` (``>=`` unless ``strict``), else ``ValueError`` naming ``name``.

    Example:
        >>> check_number("poll_seconds", "5")
        Traceback (most recent call last):
        ...
        ValueError: poll_seconds must be a number > 0, got '5'
    """
    if value is None and allow_none:
        return None
    ok = _is_number(value) and (value > minimum if strict else value >= minimum) and (allow_inf or not math.isinf(value))
    if not ok:
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a number {bound}{' or None' if allow_none else ''}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool``, else ``ValueError`` naming ``name`` (``"false"`` is truthy: never guess)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming ``name`` and listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value
