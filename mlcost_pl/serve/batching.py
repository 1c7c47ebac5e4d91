"""Adaptive batch sizing (Clipper's AIMD): pure logic, no server, no real clock.

The worker dispatches at once whatever is queued, up to :attr:`AIMDBatchController.max_batch`; the controller moves
that cap: additive increase while measured batch latency stays inside the budget and the cap was binding,
multiplicative decrease as soon as a batch goes over it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from mlcost_pl.errors import UserInputError


class AIMDBatchController:
    """Additive-increase / multiplicative-decrease cap on the batch size, driven by measured batch latency.

    A request waits at most one batch in the queue before its own batch runs, so a batch latency of
    ``slo_ms * headroom`` (default half the SLO) keeps request latency inside ``slo_ms``.

    Args:
        slo_ms: the request latency budget (p99) in milliseconds (``serve.slo_ms``).
        min_batch: the smallest cap.
        max_batch: the largest cap.
        start_batch: the initial cap (default ``min_batch``).
        step: additive increase per in-budget full batch.
        backoff: multiplicative decrease factor when a batch goes over budget (0 < backoff < 1).
        headroom: fraction of ``slo_ms`` one batch may take.
        window: recent batches whose latency percentile is compared with the budget.
        percentile: that percentile (99 = p99).
        clock: monotonic seconds; injected in tests.

    Raises:
        ValueError: a bad argument, named.

    Example:
        >>> t = [0.0]
        >>> c = AIMDBatchController(slo_ms=50, max_batch=8, clock=lambda: t[0])
        >>> for _ in range(3):
        ...     start = c.start()
        ...     t[0] += 0.005  # 5 ms per batch: well inside 25 ms
        ...     _ = c.finish(start, c.max_batch)
        >>> c.max_batch
        4
    """

    def __init__(self, slo_ms: float = 50.0, min_batch: int = 1, max_batch: int = 64, start_batch: int | None = None,
                 step: int = 1, backoff: float = 0.5, headroom: float = 0.5, window: int = 32, percentile: float = 99.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not slo_ms > 0:
            raise UserInputError(f"serve.slo_ms must be > 0, got {slo_ms}")
        if min_batch < 1 or max_batch < min_batch:
            raise UserInputError(f"serve.batching.min_batch/max_batch must satisfy 1 <= min <= max, got {min_batch}, {max_batch}")
        if step < 1:
            raise UserInputError(f"serve.batching.step must be >= 1, got {step}")
        if not 0 < backoff < 1:
            raise UserInputError(f"serve.batching.backoff must be in (0, 1), got {backoff}")
        if not 0 < headroom <= 1:
            raise UserInputError(f"serve.batching.headroom must be in (0, 1], got {headroom}")
        if window < 1 or not 0 < percentile <= 100:
            raise UserInputError(f"serve.batching.window must be >= 1 and percentile in (0, 100], got {window}, {percentile}")
        self.slo_ms = float(slo_ms)
        self.min_batch, self.max_limit = int(min_batch), int(max_batch)
        self.step, self.backoff, self.headroom = int(step), float(backoff), float(headroom)
        self.percentile = float(percentile)
        self.clock = clock
        self.max_batch = int(start_batch or min_batch)
        if not self.min_batch <= self.max_batch <= self.max_limit:
            raise UserInputError(f"serve.batching.start_batch must be in [{min_batch}, {max_batch}], got {start_batch}")
        self._latencies: deque[float] = deque(maxlen=int(window))
        self.increases = self.decreases = 0

    @property
    def budget_ms(self) -> float:
        """The batch latency the controller aims to stay under."""
        return self.slo_ms * self.headroom

    def start(self) -> float:
        """The clock reading at the start of a batch (pass it to :meth:`finish`)."""
        return self.clock()

    def finish(self, started: float, size: int) -> float:
        """Record a batch of ``size`` that began at ``started``; return its latency in ms and adjust the cap."""
        latency_ms = (self.clock() - started) * 1e3
        self.observe(latency_ms, size)
        return latency_ms

    def observe(self, latency_ms: float, size: int) -> int:
        """Adjust the cap after a batch of ``size`` that took ``latency_ms``; return the new cap."""
        if size < 1:
            raise UserInputError(f"size must be >= 1, got {size}")
        if latency_ms > self.budget_ms:
            # over budget: back off at once, and forget the window that led here
            new = max(self.min_batch, int(min(self.max_batch, size) * self.backoff))
            if new < self.max_batch:
                self.decreases += 1
            self.max_batch = new
            self._latencies.clear()
            return self.max_batch
        self._latencies.append(latency_ms)
        if size >= self.max_batch and self.tail_ms() <= self.budget_ms and self.max_batch < self.max_limit:
            self.max_batch = min(self.max_limit, self.max_batch + self.step)
            self.increases += 1
        return self.max_batch

    def tail_ms(self) -> float:
        """The ``percentile`` of the recent in-budget batch latencies (0 when none)."""
        if not self._latencies:
            return 0.0
        ordered = sorted(self._latencies)
        rank = min(len(ordered) - 1, max(0, int(round(self.percentile / 100 * len(ordered) + 0.5)) - 1))
        return ordered[rank]

    def state(self) -> dict[str, float]:
        """The controller's figures, for logs and ``/metrics``."""
        return {"max_batch": self.max_batch, "budget_ms": self.budget_ms, "tail_ms": self.tail_ms(),
                "increases": self.increases, "decreases": self.decreases}
