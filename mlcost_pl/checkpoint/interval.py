"""How often to checkpoint: Young/Daly's first-order optimum."""

from __future__ import annotations

import math

from mlcost_pl.errors import UserInputError


def young_daly_interval(save_seconds: float, mtbf_seconds: float) -> float:
    """Seconds of work between checkpoints that minimize expected lost + checkpointing time: ``sqrt(2 C M)``.

    Args:
        save_seconds: ``C``, what one checkpoint costs the training loop (seconds).
        mtbf_seconds: ``M``, the mean time between failures (preemptions), in seconds.

    Raises:
        ValueError: ``save_seconds < 0`` or ``mtbf_seconds <= 0`` (names the argument).

    Example:
        >>> young_daly_interval(2.0, 3600.0)
        120.0
    """
    if not save_seconds >= 0 or math.isinf(save_seconds):
        raise UserInputError(f"save_seconds must be a finite number >= 0, got {save_seconds!r}")
    if not mtbf_seconds > 0 or math.isinf(mtbf_seconds):
        raise UserInputError(f"mtbf_seconds must be a finite number > 0, got {mtbf_seconds!r}")
    return math.sqrt(2.0 * save_seconds * mtbf_seconds)
