"""Peak memory of one training step on CPU, measured from the tensors the step really creates.

CPU has no allocator statistics like ``torch.cuda.max_memory_allocated``, so :func:`measure_step_memory` runs a real
forward/backward/optimizer step and adds up the *unique storages* (deduplicated by data pointer) of:

* parameters and buffers of the module,
* gradients after ``backward``,
* optimizer state after ``optimizer.step()`` (AdamW's two moments, 8-bit quantized state, ...),
* activations saved for backward, captured with ``torch.autograd.graph.saved_tensors_hooks`` during the forward
  (parameters saved by an op are not counted twice; several views of one storage count as the largest view).

Their sum is the memory held at the peak of a step (end of forward: activations alive, plus the gradients and
optimizer state kept from the previous step). It does not include allocator fragmentation, per-op scratch buffers
freed inside an op, or activation gradients that exist only transiently during backward, which is why the budget
callers compare it with should keep some headroom.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

GIB = 2**30


@dataclass(frozen=True)
class StepMemory:
    """Bytes held by one training step, by kind; ``peak_bytes`` is their sum."""

    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.activations_bytes

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GIB


def _storage_key(t: torch.Tensor) -> tuple[str, int, int] | None:
    try:
        s = t.untyped_storage()
        return (str(t.device), s.data_ptr(), s.nbytes())
    except (RuntimeError, NotImplementedError):  # tensor subclasses without a storage
        return None


def unique_bytes(tensors: Iterable[torch.Tensor], exclude: set | None = None) -> int:
    """Total bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen: set = set(exclude or ())
    total = 0
    for t in tensors:
        key = _storage_key(t)
        if key is None or key in seen:
            continue
        seen.add(key)
        total += key[2]
    return total


def _state_tensors(optimizer: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    if optimizer is None:
        return []
    out = []
    for state in optimizer.state.values():
        out.extend(v for v in state.values() if isinstance(v, torch.Tensor))
    return out


def measure_step_memory(
    loss_fn: Callable[[], torch.Tensor],
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> StepMemory:
    """Run one step (``loss_fn()`` forward, ``backward``, ``optimizer.step()``) and measure what it held.

    Args:
        loss_fn: runs the forward pass and returns the scalar loss.
        module: the model whose parameters, buffers and gradients are counted.
        optimizer: stepped once when given; its state is counted.

    Returns:
        The bytes by kind. Gradients are left in place (the caller zeroes them).

    Example:
        >>> net = torch.nn.Linear(100, 10)
        >>> mem = measure_step_memory(lambda: net(torch.randn(8, 100)).sum(), net, torch.optim.AdamW(net.parameters()))
        >>> mem.params_bytes == mem.grads_bytes, mem.activations_bytes >= 8 * 100 * 4  # the input is saved by the matmul
        (True, True)
    """
    tensors = [*module.parameters(), *module.buffers()]
    param_keys = {k for k in map(_storage_key, tensors) if k is not None}
    saved: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key is not None and key not in param_keys:
            # A slice of a big tensor (e.g. a batch cut from an in-memory dataset) holds only its own bytes for
            # this step: count the largest view of each storage, not the whole storage.
            saved[key] = max(saved.get(key, 0), min(key[2], t.numel() * t.element_size()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    activations = sum(saved.values())
    loss.backward()
    if optimizer is not None:
        optimizer.step()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return StepMemory(
        params_bytes=unique_bytes(tensors),
        grads_bytes=unique_bytes(grads),
        optimizer_bytes=unique_bytes(_state_tensors(optimizer)),
        activations_bytes=int(activations),
    )
