"""Recommend an autoscaling setting: the cheapest HPA (target utilization, min/max replicas, scale-down window) whose
replayed SLO misses stay under a limit, compared with static peak provisioning, the classic default HPA and KEDA.

The recommended HPA is simulated exactly as ``mlcost_pl.serve.deploy.hpa`` writes it: a CPU ``Utilization`` metric
plus the in-flight requests Pods metric (here in requests/s per pod, Little's law), scale-up ``+100 %`` per 15 s,
scale-down ``scale_down_percent`` per ``scale_down_period_s`` after the stabilization window. Pure logic; the plot
imports matplotlib lazily.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcost_pl.autoscale.capacity import Capacity
from mlcost_pl.autoscale.hpa import Behavior, ScalingPolicy, ScalingRules
from mlcost_pl.autoscale.simulate import HPAPolicy, SimResult, StaticPolicy, classic_hpa, keda_policy, simulate
from mlcost_pl.autoscale.trace import Trace
from mlcost_pl.errors import UserInputError
from mlcost_pl.utils.fs import atomic_write_local

DEFAULT_TARGETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9)
DEFAULT_WINDOWS = (60, 180, 300, 600)
# The in-flight metric of the recommended HPA asks for more replicas once a pod's load passes this share of its
# capacity: a safety net for overload, where CPU saturates and stops telling how far behind the pods are.
IN_FLIGHT_FRACTION = 1.0


def usd_per_replica_hour(instance: str, market: str = "on_demand", usd_per_hour: float | None = None,
                         replicas_per_instance: int = 1) -> float:
    """The price of one replica-hour: the catalog price of ``instance`` on ``market`` over the replicas it holds.

    Raises:
        ValueError: unknown instance (nearest names listed), no spot price known, bad ``replicas_per_instance``.
    """
    from mlcost_pl.cost.catalog import resolve_instance

    if not isinstance(replicas_per_instance, int) or replicas_per_instance < 1:
        raise UserInputError(f"plan.replicas_per_instance must be an integer >= 1, got {replicas_per_instance!r}")
    entry = resolve_instance(instance, usd_per_hour=usd_per_hour)
    price = entry.price(market)
    if price is None:
        raise UserInputError(f"plan.market={market!r}: the catalog has no spot price for {instance!r}; give plan.usd_per_hour")
    return price / replicas_per_instance


def deploy_behavior(scale_down_stabilization_s: int, scale_down_percent: int = 50, scale_down_period_s: int = 60) -> Behavior:
    """The ``behavior`` that ``mlcost_pl.serve.deploy.hpa`` writes."""
    return Behavior(
        scale_up=ScalingRules((ScalingPolicy("Percent", 100, 15),), "Max", 0),
        scale_down=ScalingRules((ScalingPolicy("Percent", int(scale_down_percent), int(scale_down_period_s)),), "Max",
                                int(scale_down_stabilization_s)),
    )


def deploy_hpa(capacity: Capacity, target_percent: int, min_replicas: int, max_replicas: int, scale_down_stabilization_s: int,
               scale_down_percent: int = 50, scale_down_period_s: int = 60, name: str = "recommended HPA") -> HPAPolicy:
    """The HPA that ``recipes.serve deploy=k8s`` deploys with these values, as a simulator policy."""
    return HPAPolicy(min_replicas=min_replicas, max_replicas=max_replicas, metric="cpu", target=float(target_percent),
                     pods_rps_target=IN_FLIGHT_FRACTION * capacity.rps,
                     behavior=deploy_behavior(scale_down_stabilization_s, scale_down_percent, scale_down_period_s), name=name)


@dataclass
class Plan:
    """The search's outcome.

    Attributes:
        recommended: the cheapest setting under the miss limit (``None`` when no candidate meets it).
        static: static peak provisioning.
        classic: the classic default HPA (CPU 70 %, min 2, max 20).
        keda: KEDA on requests/s with the recommended target, scaling to zero.
        candidates: every simulated candidate's summary.
        max_slo_miss: the limit.
        values: the recommended values for the manifests (``DeploySettings`` fields).
    """

    recommended: SimResult | None
    static: SimResult
    classic: SimResult
    keda: SimResult | None
    candidates: list[dict[str, Any]]
    max_slo_miss: float
    values: dict[str, Any] = field(default_factory=dict)

    def policies(self) -> list[SimResult]:
        """The compared policies, in table order."""
        return [r for r in (self.static, self.classic, self.recommended, self.keda) if r is not None]


def _targets(capacity: Capacity, fractions: Iterable[float]) -> list[int]:
    """CPU target percents for load fractions of capacity (integers 1..100, as the manifest takes them)."""
    out = sorted({min(100, max(1, round(f * capacity.cpu_utilization_at_capacity))) for f in fractions})
    if not out:
        raise UserInputError("plan.targets must list at least one fraction of capacity in (0, 1]")
    return out


def search(trace: Trace, capacity: Capacity, usd_per_hour: float, max_slo_miss: float = 0.001,
           targets: Sequence[float] = DEFAULT_TARGETS, windows: Sequence[int] = DEFAULT_WINDOWS,
           min_replicas: int = 1, scale_down_percent: int = 50, scale_down_period_s: int = 60,
           classic_max_replicas: int = 20) -> Plan:
    """Replay ``trace`` for each candidate and return the cheapest under ``max_slo_miss``.

    Every target x scale-down window is replayed at ``min_replicas`` with ``max_replicas`` the peak's need at that
    target. Then, cheapest first, a combination over the limit gets the smallest ``min_replicas`` that meets it (by
    bisection up to the peak's need, i.e. static provisioning, which always meets it), and a combination under it
    also tries a lower ``max_replicas`` (the peak's need at full capacity); combinations that cannot beat the best
    found are skipped. Ties on dollars go to fewer misses.

    Raises:
        ValueError: ``max_slo_miss`` outside [0, 1), bad grid values (named ``plan.<name>``).
    """
    if not 0 <= max_slo_miss < 1:
        raise UserInputError(f"plan.max_slo_miss must be a share of requests in [0, 1), got {max_slo_miss!r}")
    if any(not 0 < f <= 1 for f in targets):
        raise UserInputError(f"plan.targets must be fractions of capacity in (0, 1], got {list(targets)}")
    if any(not isinstance(w, int) or not 0 <= w <= 3600 for w in windows) or not windows:
        raise UserInputError(f"plan.windows must be seconds in 0..3600, got {list(windows)}")
    if not isinstance(min_replicas, int) or min_replicas < 1:
        raise UserInputError(f"plan.min_replicas must be an integer >= 1 (the lowest min_replicas tried), got {min_replicas!r}")
    static = simulate(trace, capacity, StaticPolicy(), usd_per_hour)
    peak = float(trace.rps.max())
    peak_n = static.peak_replicas
    classic = simulate(trace, capacity, classic_hpa(max(classic_max_replicas, 2)), usd_per_hour)

    candidates: list[SimResult] = []

    def run(percent: int, low: int, high: int, window: int) -> SimResult:
        result = simulate(trace, capacity, deploy_hpa(capacity, percent, low, high, window, scale_down_percent,
                                                      scale_down_period_s), usd_per_hour)
        candidates.append(result)
        return result

    # first pass: every target x window at the lowest min_replicas; then, cheapest first, raise min_replicas by
    # bisection until the misses fit (min_replicas = the peak's need is static provisioning, which always fits),
    # skipping combinations that cannot beat the best found
    first = []
    for percent in _targets(capacity, targets):
        high = max(peak_n, math.ceil(peak / (capacity.rps * percent / capacity.cpu_utilization_at_capacity) - 1e-9))
        for window in windows:
            first.append((run(percent, min_replicas, max(high, min_replicas), window), percent, high, window))
    best_usd = math.inf
    hours = trace.duration_s / 3600
    for result, percent, high, window in sorted(first, key=lambda x: x[0].usd):
        if result.usd >= best_usd:
            break
        low = min_replicas
        if result.miss_share > max_slo_miss:
            lo, hi = low + 1, max(peak_n, low + 1)  # hi: static provisioning, which fits
            fit = None
            while lo <= hi:
                mid = (lo + hi) // 2
                if mid * hours * usd_per_hour >= best_usd:  # mid pods all day already cost more than the best
                    hi = mid - 1
                    continue
                trial = run(percent, mid, max(high, mid), window)
                if trial.miss_share <= max_slo_miss:
                    fit, hi = trial, mid - 1
                else:
                    lo = mid + 1
            if fit is None:
                continue
            result, low = fit, fit.settings["min_replicas"]
        best_usd = min(best_usd, result.usd)
        if high > max(peak_n, low):  # a tighter max, when the target's headroom asked for more than the peak's need
            tighter = run(percent, low, max(peak_n, low), window)
            if tighter.miss_share <= max_slo_miss:
                best_usd = min(best_usd, tighter.usd)
    feasible = [c for c in candidates if c.miss_share <= max_slo_miss]
    best = min(feasible, key=lambda r: (round(r.usd, 6), r.missed, r.replica_hours)) if feasible else None
    keda = None
    values: dict[str, Any] = {}
    if best is not None:
        s = best.settings
        fraction = s["target"] / capacity.cpu_utilization_at_capacity
        keda = simulate(trace, capacity, keda_policy(fraction * capacity.rps, s["max_replicas"], 0,
                                                     s["scale_down_stabilization_s"], polling_s=15,
                                                     cooldown_s=s["scale_down_stabilization_s"], name="KEDA (requests/s, 0-N)"),
                        usd_per_hour)
        latency_s = capacity.mean_latency_s
        values = {"min_replicas": s["min_replicas"], "max_replicas": s["max_replicas"],
                  "cpu_target_utilization": int(s["target"]), "scale_down_stabilization_s": s["scale_down_stabilization_s"],
                  "scale_down_percent": scale_down_percent, "scale_down_period_s": scale_down_period_s,
                  "in_flight_target": round(max(0.1, IN_FLIGHT_FRACTION * capacity.rps * latency_s), 2),
                  "keda_threshold": round(max(0.1, fraction * capacity.rps * latency_s), 2)}
    summaries = [c.summary() for c in candidates]
    return Plan(best, static, classic, keda, summaries, max_slo_miss, values)


def table_rows(plan: Plan) -> list[dict[str, Any]]:
    """One row per compared policy: replica-hours, dollars, SLO-miss share, peak replicas, savings vs static peak."""
    base = plan.static
    rows = []
    for r in plan.policies():
        rows.append({"policy": r.name, "replica_hours": r.replica_hours, "usd": r.usd, "miss_share": r.miss_share,
                     "peak_replicas": r.peak_replicas, "replica_hours_vs_static": r.replica_hours / base.replica_hours - 1,
                     "meets_slo": r.miss_share <= plan.max_slo_miss})
    return rows


def plot(plan: Plan, trace: Trace, path: str | Path, bucket_s: int | None = None) -> Path:
    """A PNG of the traffic, the replicas of each policy, and the SLO misses, over the trace (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    horizon = len(plan.static.rps)
    bucket = bucket_s or max(1, horizon // 1440)
    n = horizon // bucket

    def binned(values: np.ndarray, how: str = "mean") -> np.ndarray:
        v = values[: n * bucket].reshape(n, bucket)
        return v.sum(axis=1) if how == "sum" else v.mean(axis=1)

    hours = np.arange(n) * bucket / 3600.0
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    axes[0].plot(hours, binned(plan.static.rps), color="black", lw=0.8)
    axes[0].set_ylabel("requests/s")
    axes[0].set_title(f"{trace.name}: traffic, replicas and SLO misses (static peak: {plan.static.settings['replicas']} "
                      f"replicas)")
    for r in plan.policies():
        axes[1].plot(hours, binned(r.replicas), lw=1.0, label=f"{r.name}: {r.replica_hours:.0f} replica-h, ${r.usd:.2f}")
        axes[2].plot(hours, binned(r.missed_per_s, "sum"), lw=0.8, label=f"{r.name}: {100 * r.miss_share:.3f} % missed")
    axes[1].set_ylabel("replicas")
    axes[1].legend(fontsize=7, loc="upper left")
    axes[2].set_ylabel(f"requests over SLO per {bucket} s")
    axes[2].set_xlabel("hours")
    axes[2].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=90)
    finally:
        plt.close(fig)
    atomic_write_local(path, png.getvalue())
    return path
