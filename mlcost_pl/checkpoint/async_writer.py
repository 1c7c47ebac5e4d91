"""CPU snapshots of a checkpoint dict and a one-slot background writer with retries.

The training loop pays only for :func:`snapshot_to_cpu` (a tensor copy into reused, pinned-when-CUDA buffers); the
serialization, hashing, writing/uploading, manifest and retention run in :class:`AsyncWriter`'s thread. At most one
job is in flight; errors are retried with exponential backoff, then kept and re-raised on the caller's thread by
:meth:`AsyncWriter.raise_if_failed`, so they are never lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch


class CheckpointWriteError(RuntimeError):
    """A background checkpoint write failed after its retries (the cause is chained)."""


def call_with_retries(
    fn: Callable[[], Any],
    retries: int = 3,
    backoff_s: float = 0.5,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> Any:
    """``fn()``, retried up to ``retries`` times after a failure, waiting ``backoff_s``, then twice as long, ...

    Example:
        >>> call_with_retries(lambda: 1)
        1
    """
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as err:
            if attempt == retries:
                raise
            if on_retry is not None:
                on_retry(attempt + 1, err)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class BufferPool:
    """Reusable destination tensors for snapshots, matched by traversal position, shape, dtype and device."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []
        self._i = 0
        self.bytes = 0

    def start(self) -> None:
        self._i = 0

    def take(self, src: torch.Tensor) -> torch.Tensor:
        i = self._i
        self._i += 1
        pin = src.device.type == "cuda"
        if i < len(self._buffers):
            buf = self._buffers[i]
            if buf.shape == src.shape and buf.dtype == src.dtype and buf.is_pinned() == pin:
                return buf
        buf = torch.empty(src.shape, dtype=src.dtype, device="cpu", pin_memory=pin)
        if i < len(self._buffers):
            self._buffers[i] = buf
        else:
            self._buffers.append(buf)
        self.bytes += buf.numel() * buf.element_size()
        return buf


def snapshot_to_cpu(obj: Any, pool: BufferPool | None = None) -> Any:
    """A copy of ``obj`` whose tensors live in CPU memory the training loop will not touch again.

    Containers (dict, list, tuple and their subclasses) are rebuilt; tensors are copied into ``pool``'s reused buffers
    (pinned for CUDA sources, copied with ``non_blocking`` and one synchronize at the end); other leaves are shared.

    Example:
        >>> w = torch.ones(2)
        >>> snap = snapshot_to_cpu({"w": w})
        >>> _ = w.add_(1)
        >>> snap["w"].tolist()
        [1.0, 1.0]
    """
    pool = pool if pool is not None else BufferPool()
    pool.start()
    saw_cuda = [False]

    def copy(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            src = x.detach()
            if src.is_sparse or src.layout != torch.strided or src.is_quantized:
                return src.to("cpu", copy=True)
            if src.device.type == "cuda":
                saw_cuda[0] = True
            buf = pool.take(src)
            buf.copy_(src, non_blocking=src.device.type == "cuda")
            return buf
        if isinstance(x, dict):
            items = [(k, copy(v)) for k, v in x.items()]
            try:
                return type(x)(items)
            except TypeError:
                return dict(items)
        if isinstance(x, list):
            return [copy(v) for v in x]
        if isinstance(x, tuple):
            vals = [copy(v) for v in x]
            return type(x)(*vals) if hasattr(x, "_fields") else type(x)(vals)
        return x

    out = copy(obj)
    if saw_cuda[0]:
        torch.cuda.synchronize()
    return out


class AsyncWriter:
    """Runs one write job at a time on a background thread, retrying failures with exponential backoff.

    Args:
        retries: extra attempts after the first failure.
        backoff_s: the first retry waits this long; each further retry doubles it.

    Example:
        >>> w = AsyncWriter()
        >>> w.submit(lambda: 42)
        True
        >>> w.wait()
        >>> w.pop_results()
        [42]
    """

    def __init__(self, retries: int = 3, backoff_s: float = 0.5, name: str = "mlcost-checkpoint-writer") -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        self.retries = retries
        self.backoff_s = backoff_s
        self.name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._results: list[Any] = []
        self._lock = threading.Lock()
        self.on_retry: Callable[[int, BaseException], None] | None = None

    @property
    def busy(self) -> bool:
        """True while a job is in flight."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Callable[[], Any]) -> bool:
        """Start ``job`` in the background; returns False (and starts nothing) if one is already in flight."""
        self.raise_if_failed()
        if self.busy:
            return False
        self._thread = threading.Thread(target=self._run, args=(job,), name=self.name, daemon=True)
        self._thread.start()
        return True

    def _run(self, job: Callable[[], Any]) -> None:
        try:
            result = call_with_retries(job, self.retries, self.backoff_s, self.on_retry)
        except BaseException as err:  # noqa: BLE001 - kept and re-raised on the caller's thread
            with self._lock:
                self._error = err
        else:
            with self._lock:
                self._results.append(result)

    def wait(self) -> None:
        """Block until the in-flight job (if any) has finished; then raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        """Raise :class:`CheckpointWriteError` (once) if a background job failed after its retries."""
        with self._lock:
            err, self._error = self._error, None
        if err is not None:
            raise CheckpointWriteError(f"background checkpoint write failed after {self.retries + 1} attempts: {err}") from err

    def record(self, result: Any) -> None:
        """Add the result of a job run in the foreground, so it is reported with the background ones."""
        with self._lock:
            self._results.append(result)

    def pop_results(self) -> list[Any]:
        """Results of the jobs finished since the last call, oldest first."""
        with self._lock:
            out, self._results = self._results, []
        return out
