"""PyTorch intra-op threads for one block of work, restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mlcost_pl.errors import UserInputError


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``; ``None`` leaves PyTorch's setting alone.

    Small models gain nothing from a second intra-op thread, and on a shared machine the extra threads spin against
    other processes (a TinyCNN epoch on digits ran 4-7x slower with 2 threads than with 1 on 2 contended cores).

    Args:
        threads: intra-op threads (``torch_threads=`` in the recipes), or ``None``.

    Raises:
        ValueError: ``threads`` is not a positive integer.

    Example:
        >>> import torch
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
    """
    if threads is None:
        yield
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise UserInputError(f"torch_threads must be a positive integer or null, got {threads!r}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
