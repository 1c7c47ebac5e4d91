"""Add newly unfrozen parameters to a live optimizer by identity, and keep its LR schedulers working.

Lightning's ``BaseFinetuning`` filters out parameters already in the optimizer with ``torch.equal`` (value equality),
so a new parameter that happens to equal one already present (two zero-initialized biases) is silently never trained.
Here membership is by ``id``. A param group appended after a scheduler was built is invisible to it (the scheduler
zips ``base_lrs`` with ``param_groups``, so the new group keeps a constant LR); :func:`add_param_group` extends every
scheduler's per-group state so the new group follows the same schedule, scaled by its multiplier.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from mlcost_pl.errors import UserInputError

# Per-group keys that OneCycleLR/CyclicLR-style schedulers keep in the param group, scaled with the LR.
_LR_KEYS = ("initial_lr", "max_lr", "min_lr")


def params_in(optimizer: torch.optim.Optimizer) -> set[int]:
    """``id`` of every parameter the optimizer holds."""
    return {id(p) for g in optimizer.param_groups for p in g["params"]}


def add_param_group(
    optimizer: torch.optim.Optimizer,
    params: Iterable[torch.nn.Parameter],
    lr_multiplier: float = 1.0,
    schedulers: Sequence[Any] = (),
    name: str | None = None,
) -> dict[str, Any] | None:
    """Append the parameters of ``params`` that the optimizer does not hold yet (by identity) as one param group.

    The new group copies the hyper-parameters of the optimizer's first group; its LR (and ``initial_lr``,
    ``max_lr``, ``min_lr`` when present) is the first group's value times ``lr_multiplier``, so it starts at the
    same point of the schedule. Each scheduler in ``schedulers`` gets its ``base_lrs`` (``min_lrs`` for
    ``ReduceLROnPlateau``, ``max_lrs`` for ``CyclicLR``) and last LR extended.

    Returns:
        The new param group, or ``None`` when every parameter was already in the optimizer.

    Raises:
        ValueError: ``lr_multiplier`` is not > 0.

    Example:
        >>> a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([a], lr=0.1)
        >>> add_param_group(opt, [a, b], lr_multiplier=0.5)["lr"]  # b equals a but is still added
        0.05
    """
    if not lr_multiplier > 0:
        raise UserInputError(f"lr_multiplier must be > 0, got {lr_multiplier}")
    present = params_in(optimizer)
    seen: set[int] = set()
    new = []
    for p in params:
        if id(p) in present or id(p) in seen:
            continue
        seen.add(id(p))
        new.append(p)
    if not new:
        return None
    ref = optimizer.param_groups[0]
    group = {k: v for k, v in ref.items() if k != "params"}
    for key in ("lr", *_LR_KEYS):
        if key in group and isinstance(group[key], (int, float)):
            group[key] = group[key] * lr_multiplier
    if name is not None:
        group["name"] = name
    group["params"] = new
    optimizer.add_param_group(group)
    for sched in schedulers:
        _extend_scheduler(sched, lr_multiplier)
    return optimizer.param_groups[-1]


def _extend_scheduler(sched: Any, mult: float) -> None:
    n = len(sched.optimizer.param_groups)
    for attr in ("base_lrs", "min_lrs", "max_lrs", "_last_lr", "last_epoch_lrs"):
        values = getattr(sched, attr, None)
        if isinstance(values, list) and len(values) == n - 1 and values:
            scale = mult if attr != "min_lrs" else 1.0
            values.append(values[0] * scale)
    # Chained/sequential schedulers hold children.
    for child in getattr(sched, "_schedulers", []) or []:
        _extend_scheduler(child, mult)
