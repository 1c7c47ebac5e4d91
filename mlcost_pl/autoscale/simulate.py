"""Replay a traffic trace through static provisioning, the Kubernetes HPA, or KEDA, second by second.

The model (documented in docs/autoscaling.md):

- **Pods.** A pod is billed from creation to deletion and serves traffic from ``capacity.startup_s`` after creation.
  A scale-down deletes not-yet-ready pods first, then the newest ready ones (the ReplicaSet controller's order).
- **Load and SLO misses.** Traffic is spread evenly over the ready pods. In each second, the requests above
  ``ready pods x capacity.rps`` count as SLO misses (a fluid model without a backlog: an overload second does not
  spill into the next); with no ready pod every request misses. Below capacity nothing misses, because capacity is
  by definition the rate one replica serves with p99 within the SLO.
- **Metrics.** A CPU ``Utilization`` target sees each ready pod's CPU, ``cpu_utilization_at_capacity x
  min(load / capacity.rps, saturation_rps / rps)`` percent, averaged over ``metric_window_s``; a pod counts as
  unready until one full window after it became ready (the controller's rule for pods whose metric predates their
  readiness). A requests/s ``AverageValue`` target (KEDA's Prometheus trigger) sees the arrival rate averaged over
  ``metric_window_s``, overload included.
- **Controllers.** The HPA syncs every ``sync_s`` (15 s) with the exact algorithm of ``mlcost_pl.autoscale.hpa``.
  KEDA polls every ``polling_s`` (30 s): at 0 replicas an active trigger (rate > ``activation_threshold``) scales to
  ``max(1, min_replica_count)``; with no activity for ``cooldown_s`` it scales to ``min_replica_count`` (0); between
  1 and N the HPA it creates decides.
- **Start.** Autoscaled runs start at the replicas the first window's rate asks for, all ready.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlcost_pl.autoscale.capacity import Capacity
from mlcost_pl.autoscale.hpa import Behavior, HPAController, average_value_replicas, default_scale_down, utilization_replicas
from mlcost_pl.autoscale.trace import Trace
from mlcost_pl.errors import UserInputError

METRICS = ("cpu", "rps")
_LONG_AGO = -(10**9)


@dataclass(frozen=True)
class StaticPolicy:
    """A fixed replica count; ``None`` sizes it for the trace's peak: ``ceil(peak rate / capacity.rps)``."""

    replicas: int | None = None
    name: str = "static peak"


@dataclass(frozen=True)
class HPAPolicy:
    """A HorizontalPodAutoscaler.

    Args:
        min_replicas: ``minReplicas``.
        max_replicas: ``maxReplicas``.
        metric: ``cpu`` (Resource cpu, ``Utilization`` target in percent of the request) or ``rps`` (External
            requests/s, ``AverageValue`` per replica: KEDA's Prometheus trigger).
        target: percent for ``cpu``, requests/s per replica for ``rps``.
        pods_rps_target: with ``cpu``, a second metric: a Pods ``AverageValue`` of requests/s per ready pod (the
            in-flight requests metric of ``recipes.serve``'s HPA, divided by the mean latency, by Little's law); the
            HPA takes the larger proposal. ``None``: CPU only.
        behavior: ``spec.behavior`` (Kubernetes defaults when omitted).
        tolerance: the controller's dead-band (0.1).
        sync_s: the controller's sync period (15 s).
        metric_window_s: the window the metric is averaged over (metrics-server ~30 s, a Prometheus ``rate[1m]``).
        name: a label for tables and plots.

    Raises:
        ValueError: a bad metric, target, bounds or period (named).
    """

    min_replicas: int = 1
    max_replicas: int = 10
    metric: str = "cpu"
    target: float = 70.0
    pods_rps_target: float | None = None
    behavior: Behavior = field(default_factory=Behavior)
    tolerance: float = 0.1
    sync_s: int = 15
    metric_window_s: int = 30
    name: str = "hpa"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise UserInputError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not self.target > 0:
            raise UserInputError(f"target must be > 0, got {self.target!r}")
        if self.pods_rps_target is not None and (self.metric != "cpu" or not self.pods_rps_target > 0):
            raise UserInputError(f"pods_rps_target must be > 0 and only goes with metric='cpu', got {self.pods_rps_target!r}")
        if not (isinstance(self.sync_s, int) and self.sync_s >= 1 and isinstance(self.metric_window_s, int) and self.metric_window_s >= 1):
            raise UserInputError(f"sync_s and metric_window_s must be integers >= 1, got {self.sync_s!r}, {self.metric_window_s!r}")
        if not 0 <= self.tolerance < 1:
            raise UserInputError(f"tolerance must be in [0, 1), got {self.tolerance!r}")
        HPAController(self.min_replicas, self.max_replicas, self.behavior)  # validates the bounds

    def settings(self) -> dict[str, Any]:
        """The settings as a flat dict (for plan.json and tables)."""
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas, "metric": self.metric,
                "target": self.target, "pods_rps_target": self.pods_rps_target, "scale_down_stabilization_s": self.behavior.scale_down.stabilization_window_s,
                "behavior": asdict(self.behavior), "tolerance": self.tolerance, "sync_s": self.sync_s,
                "metric_window_s": self.metric_window_s}


def classic_hpa(max_replicas: int = 20) -> HPAPolicy:
    """The blog default: CPU 70 %, min 2, max 20, Kubernetes' default behavior."""
    return HPAPolicy(min_replicas=2, max_replicas=max_replicas, metric="cpu", target=70.0, name="classic HPA (CPU 70%, 2-20)")


@dataclass(frozen=True)
class KEDAPolicy:
    """A KEDA ScaledObject with a Prometheus requests/s trigger: the HPA it creates (``hpa``, metric ``rps``, its
    ``min_replicas`` is ``max(1, min_replica_count)``) plus KEDA's own 0 <-> 1 step.

    Args:
        hpa: the HPA for 1..N (``metric="rps"``, ``target`` = the trigger's threshold).
        min_replica_count: ``minReplicaCount`` (0 to scale to zero).
        polling_s: ``pollingInterval`` (30 s).
        cooldown_s: ``cooldownPeriod`` (300 s).
        activation_threshold: the trigger is active above this rate.
        name: a label.
    """

    hpa: HPAPolicy
    min_replica_count: int = 0
    polling_s: int = 30
    cooldown_s: int = 300
    activation_threshold: float = 0.0
    name: str = "KEDA"

    def __post_init__(self) -> None:
        if self.hpa.metric != "rps":
            raise UserInputError(f"a KEDA policy scales on requests/s: hpa.metric must be 'rps', got {self.hpa.metric!r}")
        if self.hpa.min_replicas != max(1, self.min_replica_count):
            raise UserInputError(f"hpa.min_replicas must be max(1, min_replica_count) = {max(1, self.min_replica_count)}")
        if not (isinstance(self.polling_s, int) and self.polling_s >= 1 and self.cooldown_s >= 0):
            raise UserInputError(f"polling_s must be an integer >= 1 and cooldown_s >= 0, got {self.polling_s!r}, {self.cooldown_s!r}")

    def settings(self) -> dict[str, Any]:
        """The settings as a flat dict."""
        return {**self.hpa.settings(), "min_replica_count": self.min_replica_count, "polling_s": self.polling_s,
                "cooldown_s": self.cooldown_s, "activation_threshold": self.activation_threshold}


def keda_policy(threshold_rps: float, max_replicas: int, min_replica_count: int = 0, scale_down_stabilization_s: int = 300,
                metric_window_s: int = 60, **kwargs: Any) -> KEDAPolicy:
    """A KEDA policy scaling on requests/s per replica at ``threshold_rps`` (Prometheus ``rate[1m]``)."""
    behavior = Behavior(scale_down=default_scale_down(scale_down_stabilization_s))
    hpa = HPAPolicy(min_replicas=max(1, min_replica_count), max_replicas=max_replicas, metric="rps", target=threshold_rps,
                    behavior=behavior, metric_window_s=metric_window_s, name="keda-hpa")
    return KEDAPolicy(hpa=hpa, min_replica_count=min_replica_count, **kwargs)


Policy = StaticPolicy | HPAPolicy | KEDAPolicy


@dataclass
class SimResult:
    """What a replay cost and missed.

    Attributes:
        name: the policy's label.
        settings: the policy's settings.
        replica_hours: pod-hours billed (creation to deletion).
        usd: ``replica_hours x usd_per_replica_hour``.
        requests: requests in the trace.
        missed: requests over the SLO (see the module docstring's model).
        peak_replicas: the most pods at once.
        replicas: pods per second (billed).
        ready: ready pods per second.
        missed_per_s: SLO misses per second.
        rps: the trace, per second.
    """

    name: str
    settings: dict[str, Any]
    replica_hours: float
    usd: float
    requests: float
    missed: float
    peak_replicas: int
    replicas: np.ndarray
    ready: np.ndarray
    missed_per_s: np.ndarray
    rps: np.ndarray

    @property
    def miss_share(self) -> float:
        """The share of requests over the SLO (0..1)."""
        return self.missed / self.requests if self.requests else 0.0

    def summary(self) -> dict[str, Any]:
        """The figures (no time series), JSON-able."""
        return {"name": self.name, "replica_hours": round(self.replica_hours, 3), "usd": round(self.usd, 4),
                "requests": round(self.requests), "missed": round(self.missed, 1), "miss_share": self.miss_share,
                "peak_replicas": self.peak_replicas, "settings": self.settings}


def _initial(rate0: float, capacity: Capacity, hpa: HPAPolicy) -> int:
    per_pod = capacity.rps * hpa.target / capacity.cpu_utilization_at_capacity if hpa.metric == "cpu" else hpa.target
    return min(max(math.ceil(rate0 / per_pod - 1e-9), hpa.min_replicas), hpa.max_replicas)


class _Pods:
    """The live pods (creation and ready second), the ready-count changes per second, and the billing log."""

    def __init__(self, n: int, horizon: int) -> None:
        self.ready_diff = np.zeros(horizon + 1)
        self.spec_diff = np.zeros(horizon + 1)
        self.live: list[int] = []  # ready second of each live pod, in creation order
        self.ready_diff[0] += n
        self.spec_diff[0] += n
        self.live = [_LONG_AGO] * n
        self.horizon = horizon
        self.events: list[int] = []  # seconds where the ready count may change (a heap)
        self.consumed: set[int] = set()

    def scale(self, now: int, target: int, startup_s: int) -> None:
        change = target - len(self.live)
        if change > 0:
            ready_at = now + startup_s
            self.live += [ready_at] * change
            self.spec_diff[now] += change
            if ready_at <= self.horizon:
                self.ready_diff[ready_at] += change
                heapq.heappush(self.events, ready_at)
        elif change < 0:
            # the ReplicaSet deletes not-ready pods first, then the newest ready ones
            order = sorted(range(len(self.live)), key=lambda i: (self.live[i] <= now, -i))
            for i in order[:-change]:
                r = self.live[i]
                self.spec_diff[now] -= 1
                if r <= now:
                    self.ready_diff[now] -= 1
                    heapq.heappush(self.events, now)
                elif r <= self.horizon:
                    self.ready_diff[r] -= 1
            drop = set(order[:-change])
            self.live = [r for i, r in enumerate(self.live) if i not in drop]


def simulate(trace: Trace, capacity: Capacity, policy: Policy, usd_per_replica_hour: float = 0.0) -> SimResult:
    """Replay ``trace`` under ``policy``; see the module docstring for the model.

    Raises:
        ValueError: an unknown policy type, or a negative price.
    """
    if usd_per_replica_hour < 0:
        raise UserInputError(f"usd_per_replica_hour must be >= 0, got {usd_per_replica_hour}")
    rate = trace.per_second()
    horizon = len(rate)
    if isinstance(policy, StaticPolicy):
        n = policy.replicas if policy.replicas is not None else max(1, math.ceil(rate.max() / capacity.rps - 1e-9))
        replicas = np.full(horizon, n, dtype=float)
        return _result(policy.name, {"replicas": n}, rate, replicas, replicas.copy(), capacity, usd_per_replica_hour)
    if isinstance(policy, KEDAPolicy):
        hpa_policy, keda = policy.hpa, policy
    elif isinstance(policy, HPAPolicy):
        hpa_policy, keda = policy, None
    else:
        raise UserInputError(f"policy must be a StaticPolicy, HPAPolicy or KEDAPolicy, got {type(policy).__name__}")

    csum = np.concatenate([[0.0], np.cumsum(rate)])
    window = hpa_policy.metric_window_s
    step = math.gcd(hpa_policy.sync_s, keda.polling_s) if keda else hpa_policy.sync_s
    if window % step:
        raise UserInputError(f"metric_window_s ({window}) must be a multiple of the control step ({step} s: the sync period"
                         f"{' and the KEDA polling interval' if keda else ''})")
    startup = int(round(capacity.startup_s))
    rate0 = float(rate[: max(1, window)].mean())
    n0 = _initial(rate0, capacity, hpa_policy)
    if keda is not None and rate0 <= keda.activation_threshold and keda.min_replica_count == 0:
        n0 = 0
    pods = _Pods(n0, horizon)
    hpa = HPAController(hpa_policy.min_replicas, hpa_policy.max_replicas, hpa_policy.behavior)
    block_max = np.maximum.reduceat(rate, np.arange(0, horizon, step))
    cpu, cap = capacity.cpu_utilization_at_capacity, capacity.rps
    limit_per_pod = capacity.saturation_rps  # a pod's CPU stops growing there

    def integrate(a: int, b: int, ready: float, whole_block: int | None) -> tuple[float, float]:
        """Per-pod load and CPU utilization summed over seconds [a, b) with ``ready`` pods serving."""
        if ready <= 0 or b <= a:
            return 0.0, 0.0
        load = (csum[b] - csum[a]) / ready
        peak = block_max[whole_block] if whole_block is not None else rate[a:b].max()
        if peak <= limit_per_pod * ready:
            return load, cpu * load / cap
        return load, cpu / (cap * ready) * float(np.minimum(rate[a:b], limit_per_pod * ready).sum())

    util_cum, load_cum = [0.0], [0.0]  # per control step k: per-pod CPU percent-seconds and requests, summed to k*step
    running, done = float(n0), 0
    last_active = 0 if n0 > 0 else _LONG_AGO
    for now in range(step, horizon, step):
        # everything before `now` is settled: integrate the metrics over [done, now) at the ready count of each second
        load_sum = util_sum = 0.0
        t0, split = done, False
        while pods.events and pods.events[0] < now:
            e = heapq.heappop(pods.events)
            delta = pods.ready_diff[e]
            if e in pods.consumed or delta == 0:
                continue
            pods.consumed.add(e)
            if e > t0:
                load, util = integrate(t0, e, running, None)
                load_sum, util_sum, t0, split = load_sum + load, util_sum + util, e, True
            running += delta
        load, util = integrate(t0, now, running, None if split or t0 != done else done // step)
        load_cum.append(load_cum[-1] + load_sum + load)
        util_cum.append(util_cum[-1] + util_sum + util)
        done = now
        k = now // step
        k0 = max(0, k - window // step)
        span = now - k0 * step
        mean_rate = (csum[now] - csum[k0 * step]) / span
        current = len(pods.live)
        if keda is not None and now % keda.polling_s == 0:
            active = mean_rate > keda.activation_threshold
            if active:
                last_active = now
            if current == 0 and active:
                pods.scale(now, max(1, keda.min_replica_count), startup)
            elif not active and current > 0 and keda.min_replica_count == 0 and now - last_active > keda.cooldown_s:
                pods.scale(now, 0, startup)
            current = len(pods.live)
        if now % hpa_policy.sync_s != 0:
            continue
        if hpa_policy.metric == "rps":
            proposal = average_value_replicas(current, mean_rate, hpa_policy.target, hpa_policy.tolerance) if current else None
        else:
            with_metric = sum(1 for r in pods.live if r + window <= now)
            proposal = None
            if with_metric:
                utilization = (util_cum[k] - util_cum[k0]) / span
                proposal = utilization_replicas(current, [utilization] * with_metric, current - with_metric,
                                                hpa_policy.target, hpa_policy.tolerance)
                if hpa_policy.pods_rps_target is not None:
                    per_pod = (load_cum[k] - load_cum[k0]) / span
                    pods_proposal = utilization_replicas(current, [per_pod] * with_metric, current - with_metric,
                                                         hpa_policy.pods_rps_target, hpa_policy.tolerance, integer_percent=False)
                    proposal = max(proposal, pods_proposal)  # the HPA follows the metric asking for the most
        desired = hpa.reconcile(now, current, proposal)
        if desired != current:
            pods.scale(now, desired, startup)
    ready = np.cumsum(pods.ready_diff[:horizon])
    replicas = np.cumsum(pods.spec_diff[:horizon])
    return _result(policy.name, policy.settings(), rate, replicas, ready, capacity, usd_per_replica_hour)


def _result(name: str, settings: dict[str, Any], rate: np.ndarray, replicas: np.ndarray, ready: np.ndarray,
            capacity: Capacity, usd_per_replica_hour: float) -> SimResult:
    missed = np.maximum(rate - ready * capacity.rps, 0.0)
    replica_hours = float(replicas.sum()) / 3600.0
    return SimResult(name=name, settings=settings, replica_hours=replica_hours, usd=replica_hours * usd_per_replica_hour,
                     requests=float(rate.sum()), missed=float(missed.sum()), peak_replicas=int(replicas.max()),
                     replicas=replicas, ready=ready, missed_per_s=missed, rps=rate)
