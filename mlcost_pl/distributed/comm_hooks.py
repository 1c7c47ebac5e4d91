"""DDP gradient-communication hooks by name: ``none``, ``fp16``, ``bf16``, ``powersgd`` (torch's own hooks).

Pure torch (no Lightning): :func:`comm_hook` returns the ``(state, hook)`` pair that
``DistributedDataParallel.register_comm_hook`` takes; :class:`mlcost_pl.distributed.CompressedDDPStrategy` registers
it under Lightning, and the benchmark registers it on a bare DDP model.

What goes over the wire per step, for ``P`` fp32 gradient values:

========  =====================================================================================================
``none``  ``P x 4`` bytes all-reduced (DDP's built-in bucketed all-reduce)
``fp16``  ``P x 2``: each bucket is cast to float16, all-reduced, cast back (``fp16_compress_hook``)
``bf16``  ``P x 2``: the same in bfloat16 (wider range, fewer mantissa bits; ``bf16_compress_hook``)
powersgd  ``r x (rows + cols) x 4`` per matrix-shaped gradient plus 1-D tensors uncompressed, after
          ``start_iter`` plain all-reduce steps (``powerSGD_hook`` with error feedback and warm start)
========  =====================================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COMM_HOOKS = ("none", "fp16", "bf16", "powersgd")


def comm_hook(name: str, powersgd_rank: int = 2, powersgd_start_iter: int = 100, process_group: Any = None) -> tuple[Any, Callable | None]:
    """``(state, hook)`` for ``DistributedDataParallel.register_comm_hook``; ``(None, None)`` for ``"none"``.

    Args:
        name: one of ``none``, ``fp16``, ``bf16``, ``powersgd``.
        powersgd_rank: PowerSGD's matrix approximation rank (1-4 is typical; higher is closer to exact).
        powersgd_start_iter: plain all-reduce steps before PowerSGD starts (it needs a warmed-up model; >= 2).
        process_group: the group to communicate in (``None``: the default group).

    Raises:
        ValueError: an unknown ``name``, a ``powersgd_rank`` < 1 or a ``powersgd_start_iter`` < 2 (names the argument).

    Example:
        >>> comm_hook("none")
        (None, None)
        >>> comm_hook("bf16")[1].__name__
        'bf16_compress_hook'
    """
    if name not in COMM_HOOKS:
        raise ValueError(f"comm_hook must be one of {', '.join(COMM_HOOKS)}, got {name!r}")
    if isinstance(powersgd_rank, bool) or not isinstance(powersgd_rank, int) or powersgd_rank < 1:
        raise ValueError(f"powersgd_rank must be an integer >= 1, got {powersgd_rank!r}")
    if isinstance(powersgd_start_iter, bool) or not isinstance(powersgd_start_iter, int) or powersgd_start_iter < 2:
        raise ValueError(f"powersgd_start_iter must be an integer >= 2 (PowerSGD's error feedback needs warm-up), got {powersgd_start_iter!r}")
    if name == "none":
        return None, None
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    if name == "fp16":
        return process_group, default_hooks.fp16_compress_hook
    if name == "bf16":
        return process_group, default_hooks.bf16_compress_hook
    state = powerSGD_hook.PowerSGDState(
        process_group=process_group,
        matrix_approximation_rank=powersgd_rank,
        start_powerSGD_iter=powersgd_start_iter,
        min_compression_rate=2,
        use_error_feedback=True,
        warm_start=True,
    )
    return state, powerSGD_hook.powerSGD_hook
