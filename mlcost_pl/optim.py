"""Optimizer factories for configs: ``optimizer=adamw8bit`` (bitsandbytes, CPU and CUDA)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from mlcost_pl.errors import MissingDependencyError, UserInputError

INSTALL_HINT = "pip install bitsandbytes  (or: uv add bitsandbytes)"


def adamw8bit(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    min_8bit_size: int = 4096,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """AdamW with block-wise 8-bit optimizer state (``bitsandbytes.optim.AdamW8bit``): ~4x less state memory.

    Tensors with fewer than ``min_8bit_size`` elements keep 32-bit state (as in bitsandbytes). Works on CPU and CUDA.

    Raises:
        ImportError: bitsandbytes is not installed (with the command to install it).
        ValueError: ``lr``, ``eps`` or ``weight_decay`` negative, or ``betas`` outside ``[0, 1)``.

    Examples:
        >>> net = torch.nn.Linear(64, 64)
        >>> opt = adamw8bit(net.parameters(), lr=1e-3, min_8bit_size=0)
        >>> net(torch.randn(2, 64)).sum().backward(); opt.step()
        >>> opt.state[net.weight]["state1"].dtype
        torch.uint8

    From Hydra: ``optimizer=adamw8bit`` (``configs/optimizer/adamw8bit.yaml``).
    """
    if lr < 0 or eps < 0 or weight_decay < 0:
        raise UserInputError(f"lr, eps and weight_decay must be >= 0, got lr={lr}, eps={eps}, weight_decay={weight_decay}")
    if not all(0 <= b < 1 for b in betas):
        raise UserInputError(f"betas must be in [0, 1), got {tuple(betas)}")
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise MissingDependencyError(f"optimizer=adamw8bit needs bitsandbytes: {INSTALL_HINT}") from err
    return bnb.optim.AdamW8bit(
        params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, min_8bit_size=min_8bit_size, **kwargs
    )
