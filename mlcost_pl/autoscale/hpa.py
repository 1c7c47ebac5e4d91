"""The Kubernetes HorizontalPodAutoscaler algorithm (autoscaling/v2), as documented and as kube-controller-manager
implements it, with the clock injected.

What is reproduced (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/, and
``pkg/controller/podautoscaler/{horizontal,replica_calculator}.go``):

- ``desiredReplicas = ceil(currentReplicas x currentMetricValue / desiredMetricValue)``; no change when the ratio is
  within ``tolerance`` (0.1) of 1.0.
- Resource ``Utilization`` targets: utilization is the integer percent of the pods' requests, over the pods that have
  a metric and are ready; unready (starting) pods count as 0 % on a scale-up, are set aside on a scale-down; a
  recomputation that flips the direction or lands within the tolerance scales nothing.
- External/Pods ``AverageValue`` targets (KEDA's metric type): ``ceil(total / target)`` against the current replicas.
- ``behavior``: a stabilization window per direction (the highest recommendation of the last ``scaleDown`` window,
  the lowest of the last ``scaleUp`` window; defaults 300 s and 0 s), then the rate limits of the ``Pods``/``Percent``
  policies over their ``periodSeconds`` (``selectPolicy`` ``Max``, ``Min`` or ``Disabled``), then min/max replicas.
  Defaults: scale-up ``max(+100 %, +4 pods)`` per 15 s, scale-down ``-100 %`` per 15 s.
- Replicas outside ``[min, max]`` are brought back without consulting the metric; a target at 0 replicas with
  ``minReplicas > 0`` is left alone (autoscaling disabled, which is how KEDA parks a workload at zero).

Pure Python: no clock, no process, no Kubernetes client.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlcost_pl.errors import UserInputError

SELECT_POLICIES = ("Max", "Min", "Disabled")
POLICY_TYPES = ("Pods", "Percent")


@dataclass(frozen=True)
class ScalingPolicy:
    """One ``behavior.scaleUp/scaleDown.policies`` entry.

    Args:
        type: ``Pods`` (a number of pods) or ``Percent`` (a percentage of the replicas at the start of the period).
        value: pods or percent, > 0.
        period_s: ``periodSeconds``, the window over which the change is limited (1..1800).

    Raises:
        ValueError: a bad type, value or period (named).
    """

    type: str
    value: int
    period_s: int

    def __post_init__(self) -> None:
        if self.type not in POLICY_TYPES:
            raise UserInputError(f"policy type must be one of {', '.join(POLICY_TYPES)}, got {self.type!r}")
        if not isinstance(self.value, int) or self.value <= 0:
            raise UserInputError(f"policy value must be an integer > 0, got {self.value!r}")
        if not isinstance(self.period_s, int) or not 0 < self.period_s <= 1800:
            raise UserInputError(f"policy period_s must be an integer in 1..1800, got {self.period_s!r}")


@dataclass(frozen=True)
class ScalingRules:
    """``behavior.scaleUp`` or ``behavior.scaleDown``.

    Args:
        policies: the rate limits.
        select_policy: ``Max`` (the policy allowing the largest change), ``Min`` (the smallest) or ``Disabled``.
        stabilization_window_s: ``stabilizationWindowSeconds`` (0..3600).

    Raises:
        ValueError: a bad select policy or window (named).
    """

    policies: tuple[ScalingPolicy, ...]
    select_policy: str = "Max"
    stabilization_window_s: int = 0

    def __post_init__(self) -> None:
        if self.select_policy not in SELECT_POLICIES:
            raise UserInputError(f"select_policy must be one of {', '.join(SELECT_POLICIES)}, got {self.select_policy!r}")
        if not isinstance(self.stabilization_window_s, int) or not 0 <= self.stabilization_window_s <= 3600:
            raise UserInputError(f"stabilization_window_s must be an integer in 0..3600, got {self.stabilization_window_s!r}")


def default_scale_up() -> ScalingRules:
    """Kubernetes' default ``scaleUp``: no stabilization, ``max(+100 %, +4 pods)`` every 15 s."""
    return ScalingRules((ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)), "Max", 0)


def default_scale_down(stabilization_window_s: int = 300) -> ScalingRules:
    """Kubernetes' default ``scaleDown``: a 300 s stabilization window, then up to -100 % every 15 s."""
    return ScalingRules((ScalingPolicy("Percent", 100, 15),), "Max", stabilization_window_s)


@dataclass(frozen=True)
class Behavior:
    """``spec.behavior``: scale-up and scale-down rules (the Kubernetes defaults unless given)."""

    scale_up: ScalingRules = field(default_factory=default_scale_up)
    scale_down: ScalingRules = field(default_factory=default_scale_down)


def within_tolerance(usage_ratio: float, tolerance: float) -> bool:
    """True when ``usage_ratio`` is close enough to 1.0 that the HPA changes nothing."""
    return abs(1.0 - usage_ratio) <= tolerance


def _average(values: Sequence[float], integer_percent: bool) -> float:
    mean = sum(values) / len(values)
    return math.floor(mean) if integer_percent else mean  # Resource utilization is an integer percent in metricsclient


def utilization_replicas(current_replicas: int, ready_utilization: Sequence[float], unready: int, target: float,
                         tolerance: float = 0.1, missing: int = 0, integer_percent: bool = True) -> int | None:
    """Replicas for a Resource metric with a ``Utilization`` target (``GetResourceReplicas``), or, with
    ``integer_percent=False``, for a Pods metric with an ``AverageValue`` target (``calcPlainMetricReplicas``: the
    same unready/missing rules on the plain per-pod average).

    Args:
        current_replicas: the scale target's replicas now.
        ready_utilization: the utilization (percent of request) of each ready pod that has a metric.
        unready: pods that are not ready yet (or whose metric predates their readiness).
        target: ``averageUtilization`` (percent).
        tolerance: the dead-band around a ratio of 1.0.
        missing: ready pods without a metric.
        integer_percent: truncate the average to an integer percent, as Resource utilization does.

    Returns:
        The replica count the metric asks for, or ``None`` when no pod has a metric (the controller then scales
        nothing).
    """
    if not ready_utilization:
        return None
    n = len(ready_utilization)
    utilization = _average(ready_utilization, integer_percent)
    usage_ratio = utilization / target
    scale_up_with_unready = unready > 0 and usage_ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if within_tolerance(usage_ratio, tolerance):
            return current_replicas
        return math.ceil(usage_ratio * n)
    values = list(ready_utilization)
    if missing:
        if usage_ratio < 1.0:
            # scale-down: missing pods use 100 % (or the target, if higher); a plain metric's missing pods use the target
            values += [max(100.0, target) if integer_percent else target] * missing
        elif usage_ratio > 1.0:
            values += [0.0] * missing  # scale-up: missing pods use nothing
    if scale_up_with_unready:
        values += [0.0] * unready  # scale-up: unready pods use nothing
    new_ratio = _average(values, integer_percent) / target
    if within_tolerance(new_ratio, tolerance) or (usage_ratio < 1.0 < new_ratio) or (usage_ratio > 1.0 > new_ratio):
        return current_replicas
    new_replicas = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
        return current_replicas
    return new_replicas


def average_value_replicas(current_replicas: int, total: float, target_per_pod: float, tolerance: float = 0.1) -> int:
    """Replicas for an External (or Pods) metric with an ``AverageValue`` target (``GetExternalPerPodMetricReplicas``),
    the type KEDA's ScaledObjects use: ``ceil(total / target_per_pod)`` unless within the tolerance."""
    if current_replicas > 0 and within_tolerance(total / (target_per_pod * current_replicas), tolerance):
        return current_replicas
    return math.ceil(total / target_per_pod)


class HPAController:
    """The HPA's per-object state machine: stabilization history, scale events, min/max.

    Args:
        min_replicas: ``minReplicas`` (>= 1).
        max_replicas: ``maxReplicas`` (>= ``min_replicas``).
        behavior: ``spec.behavior`` (Kubernetes defaults when omitted).

    Raises:
        ValueError: bad bounds (named).

    Example:
        >>> hpa = HPAController(1, 10)
        >>> hpa.reconcile(now=0, current_replicas=2, metric_replicas=4)
        4
    """

    def __init__(self, min_replicas: int, max_replicas: int, behavior: Behavior | None = None) -> None:
        if not isinstance(min_replicas, int) or min_replicas < 1:
            raise UserInputError(f"min_replicas must be an integer >= 1, got {min_replicas!r}")
        if not isinstance(max_replicas, int) or max_replicas < min_replicas:
            raise UserInputError(f"max_replicas must be an integer >= min_replicas ({min_replicas}), got {max_replicas!r}")
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.behavior = behavior or Behavior()
        self.recommendations: deque[tuple[float, int]] = deque()
        self.scale_up_events: list[tuple[float, int]] = []
        self.scale_down_events: list[tuple[float, int]] = []

    def reconcile(self, now: float, current_replicas: int, metric_replicas: int | None) -> int:
        """One sync: the replicas to set, given the metric's proposal (``None``: no metric this time)."""
        if current_replicas == 0 and self.min_replicas != 0:
            return 0  # scaled to zero from outside (KEDA): autoscaling is disabled until someone scales it up
        if current_replicas > self.max_replicas:
            desired = self.max_replicas
        elif current_replicas < self.min_replicas:
            desired = self.min_replicas
        elif metric_replicas is None:
            return current_replicas
        else:
            stabilized = self._stabilize(now, current_replicas, metric_replicas)
            desired = self._rate_limit(now, current_replicas, stabilized)
        if desired > current_replicas:
            self.scale_up_events.append((now, desired - current_replicas))
        elif desired < current_replicas:
            self.scale_down_events.append((now, current_replicas - desired))
        return desired

    def _stabilize(self, now: float, current: int, desired: int) -> int:
        up_cutoff = now - self.behavior.scale_up.stabilization_window_s
        down_cutoff = now - self.behavior.scale_down.stabilization_window_s
        recs = self.recommendations
        while recs and recs[0][0] <= min(up_cutoff, down_cutoff):  # outside both windows: never read again
            recs.popleft()
        up = min([r for t, r in recs if t > up_cutoff], default=desired)
        down = max([r for t, r in recs if t > down_cutoff], default=desired)
        recs.append((now, desired))
        return min(max(current, min(up, desired)), max(down, desired))

    @staticmethod
    def _changed(period_s: int, events: list[tuple[float, int]], now: float) -> int:
        return sum(change for t, change in events if t > now - period_s)

    def _period_start(self, now: float, current: int, period_s: int) -> int:
        return current - self._changed(period_s, self.scale_up_events, now) + self._changed(period_s, self.scale_down_events, now)

    def scale_up_limit(self, now: float, current: int) -> int:
        """The most replicas the scale-up policies allow now (``calculateScaleUpLimitWithScalingRules``)."""
        return self._policy_limit(now, current, self.behavior.scale_up, up=True)

    def scale_down_limit(self, now: float, current: int) -> int:
        """The fewest replicas the scale-down policies allow now (``calculateScaleDownLimitWithBehaviors``)."""
        return self._policy_limit(now, current, self.behavior.scale_down, up=False)

    def _policy_limit(self, now: float, current: int, rules: ScalingRules, up: bool) -> int:
        if rules.select_policy == "Disabled":
            return current
        proposals = []
        for p in rules.policies:
            start = self._period_start(now, current, p.period_s)
            if p.type == "Pods":
                proposals.append(start + p.value if up else start - p.value)
            else:  # rounded up going up, so a small percentage still adds a pod; truncated going down
                proposals.append(math.ceil(start * (1 + p.value / 100)) if up else int(start * (1 - p.value / 100)))
        largest_change, smallest_change = (max, min) if up else (min, max)
        return (largest_change if rules.select_policy == "Max" else smallest_change)(proposals)

    def _rate_limit(self, now: float, current: int, desired: int) -> int:
        if desired > current:
            limit = max(self.scale_up_limit(now, current), current)
            return min(desired, min(self.max_replicas, limit))
        if desired < current:
            limit = min(self.scale_down_limit(now, current), current)
            return max(desired, max(self.min_replicas, limit))
        return desired
