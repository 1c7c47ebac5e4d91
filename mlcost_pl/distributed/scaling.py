"""What another node buys: a data-parallel scaling model (ring all-reduce overlapped with backward, as DDP buckets do).

Pure Python, no torch. From a measured single-node step time, the gradient bytes and the inter-node link bandwidth it
predicts, for ``n`` nodes training with a fixed per-node batch (weak scaling, as DDP does):

* ring all-reduce time ``C(n) = 2 (n-1)/n x grad_bytes / bandwidth + 2 (n-1) x k x latency`` for ``k`` buckets (each
  node sends and receives ``2 (n-1)/n`` of the gradient: reduce-scatter then all-gather);
* DDP all-reduces gradient buckets while backward still runs, so only part of ``C`` shows: with ``k`` buckets and a
  backward of ``B`` seconds, the exposed time is ``max(C - B (1 - 1/k), C / k)`` (the last bucket is ready only when
  backward ends, and a link slower than backward is exposed by the difference);
* step time ``t(n) = t(1) + exposed(n)``; an epoch takes ``ceil(samples / (batch x n))`` steps; it costs
  ``epoch seconds x n x $ per node-hour``; speedup ``epoch(1) / epoch(n)``, efficiency ``speedup / n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def ring_allreduce_seconds(nbytes: float, nodes: int, bandwidth_gbps: float, latency_s: float = 0.0) -> float:
    """Seconds for a ring all-reduce of ``nbytes`` across ``nodes`` over links of ``bandwidth_gbps`` gigabits/s.

    Example:
        >>> round(ring_allreduce_seconds(100e6, 2, 100.0), 4)   # 100 MB over 100 Gb/s, 2 nodes: 100 MB each way
        0.008
        >>> ring_allreduce_seconds(100e6, 1, 100.0)
        0.0
    """
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    if not bandwidth_gbps > 0:
        raise ValueError(f"bandwidth_gbps must be > 0, got {bandwidth_gbps!r}")
    if nodes == 1:
        return 0.0
    return 2.0 * (nodes - 1) / nodes * nbytes / (bandwidth_gbps * 1e9 / 8.0) + 2.0 * (nodes - 1) * latency_s


@dataclass(frozen=True)
class ScalingPoint:
    """The prediction for one node count."""

    nodes: int
    step_s: float
    comm_s: float
    exposed_comm_s: float
    epoch_s: float
    usd_per_epoch: float
    speedup: float
    efficiency: float


@dataclass(frozen=True)
class ScalingModel:
    """Predict step time, speedup, efficiency and $ per epoch vs node count.

    Args:
        step_s: measured step time on one node (forward, backward, optimizer) at ``batch_per_node``.
        grad_bytes: bytes all-reduced per step (parameters x 4 in fp32; half that with a bf16/fp16 hook).
        bandwidth_gbps: inter-node link bandwidth in gigabits/s (25, 100, ...).
        samples_per_epoch: training samples in one epoch.
        batch_per_node: samples one node processes per step (fixed as nodes are added).
        usd_per_node_hour: the price of one node.
        backward_fraction: the part of ``step_s`` that is backward (about 2/3 for convnets).
        bucket_bytes: DDP's ``bucket_cap_mb`` in bytes (25 MiB by default).
        latency_s: per-hop latency of the ring, paid ``2 (n-1)`` times per bucket.

    Raises:
        ValueError: a non-positive time, size, bandwidth or price, or a ``backward_fraction`` outside (0, 1].

    Example:
        >>> m = ScalingModel(step_s=0.3, grad_bytes=100e6, bandwidth_gbps=25, samples_per_epoch=1_281_167,
        ...                  batch_per_node=256, usd_per_node_hour=1.0)
        >>> p = m.predict(4)
        >>> (p.nodes, round(p.efficiency, 2))
        (4, 0.96)
    """

    step_s: float
    grad_bytes: float
    bandwidth_gbps: float
    samples_per_epoch: int
    batch_per_node: int
    usd_per_node_hour: float
    backward_fraction: float = 2.0 / 3.0
    bucket_bytes: float = 25 * 2**20
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("step_s", "grad_bytes", "bandwidth_gbps", "samples_per_epoch", "batch_per_node", "bucket_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.usd_per_node_hour < 0:
            raise ValueError(f"usd_per_node_hour must be >= 0, got {self.usd_per_node_hour!r}")
        if not 0 < self.backward_fraction <= 1:
            raise ValueError(f"backward_fraction must be in (0, 1], got {self.backward_fraction!r}")

    @property
    def buckets(self) -> int:
        return max(1, math.ceil(self.grad_bytes / self.bucket_bytes))

    def exposed_comm_seconds(self, nodes: int) -> tuple[float, float]:
        """``(all-reduce seconds, the part of it not hidden behind backward)`` on ``nodes`` nodes."""
        # every bucket is its own ring all-reduce: 2 (n-1) hops of latency each
        comm = ring_allreduce_seconds(self.grad_bytes, nodes, self.bandwidth_gbps, self.latency_s * self.buckets)
        if comm == 0.0:
            return 0.0, 0.0
        backward = self.backward_fraction * self.step_s
        k = self.buckets
        return comm, max(comm - backward * (1.0 - 1.0 / k), comm / k)

    def predict(self, nodes: int) -> ScalingPoint:
        """The prediction for ``nodes`` nodes."""
        comm, exposed = self.exposed_comm_seconds(nodes)
        step = self.step_s + exposed
        epoch = math.ceil(self.samples_per_epoch / (self.batch_per_node * nodes)) * step
        epoch1 = math.ceil(self.samples_per_epoch / self.batch_per_node) * self.step_s
        speedup = epoch1 / epoch
        return ScalingPoint(nodes, step, comm, exposed, epoch, epoch / 3600.0 * nodes * self.usd_per_node_hour, speedup, speedup / nodes)

    def table(self, node_counts: list[int]) -> list[ScalingPoint]:
        return [self.predict(n) for n in node_counts]

    def cheapest(self, node_counts: list[int]) -> ScalingPoint:
        """The node count with the lowest $ per epoch (the fewest nodes on a tie)."""
        return min(self.table(node_counts), key=lambda p: (round(p.usd_per_epoch, 9), p.nodes))

    def fastest_within(self, node_counts: list[int], budget_usd: float, epochs: float = 1.0) -> ScalingPoint | None:
        """The fastest node count whose ``epochs`` cost at most ``budget_usd`` (``None`` when none fits).

        Raises:
            ValueError: a non-positive ``budget_usd`` or ``epochs``.
        """
        if not budget_usd > 0 or not epochs > 0:
            raise ValueError(f"budget_usd and epochs must be > 0, got {budget_usd!r} and {epochs!r}")
        fits = [p for p in self.table(node_counts) if p.usd_per_epoch * epochs <= budget_usd]
        return min(fits, key=lambda p: (p.epoch_s, p.nodes)) if fits else None
