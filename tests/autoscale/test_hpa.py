"""The HPA algorithm against the Kubernetes documentation's worked examples
(https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/ and the walkthrough)."""

from __future__ import annotations

import pytest

from mlcost_pl.autoscale.hpa import (
    Behavior,
    HPAController,
    ScalingPolicy,
    ScalingRules,
    average_value_replicas,
    default_scale_down,
    utilization_replicas,
    within_tolerance,
)


def test_ratio_doubles_halves_and_respects_the_tolerance():
    # "if the current metric value is 200m, and the desired value is 100m, the number of replicas will be doubled"
    assert average_value_replicas(3, total=3 * 200, target_per_pod=100) == 6
    # "If the current value is instead 50m, you'll halve the number of replicas"
    assert average_value_replicas(4, total=4 * 50, target_per_pod=100) == 2
    # "skips any scaling action if the ratio is sufficiently close to 1.0 (within ... 0.1 by default)"
    assert average_value_replicas(4, total=4 * 109, target_per_pod=100) == 4
    assert average_value_replicas(4, total=4 * 111, target_per_pod=100) == 5
    assert within_tolerance(1.09, 0.1) and within_tolerance(0.91, 0.1) and not within_tolerance(1.11, 0.1)
    assert utilization_replicas(4, [100.0] * 4, unready=0, target=50) == 8
    assert utilization_replicas(4, [25.0] * 4, unready=0, target=50) == 2
    assert utilization_replicas(4, [54.0] * 4, unready=0, target=50) == 4


def test_walkthrough_php_apache_goes_from_1_to_7_replicas_at_305_percent():
    # walkthrough: target 50 % CPU, "CPU consumption has increased to 305% of the request" -> 7 replicas
    assert utilization_replicas(1, [305.0], unready=0, target=50) == 7
    hpa = HPAController(1, 10)
    assert hpa.reconcile(0, 1, 7) == 5  # the default scale-up policy allows max(+100 %, +4 pods) per 15 s
    assert hpa.reconcile(15, 5, 7) == 7


def test_unready_pods_count_as_zero_on_scale_up_and_missing_pods_as_100_on_scale_down():
    # one ready pod at 100 % (target 50) and two starting pods: the starting pods count as 0 % -> 33 % < 50 %,
    # which reverses the direction, so nothing changes (instead of scaling to 2 on the ready pod alone)
    assert utilization_replicas(3, [100.0], unready=2, target=50) == 3
    # two ready pods at 120 % and one starting: (120+120+0)/3 = 80 % -> ceil(1.6 x 3) = 5
    assert utilization_replicas(3, [120.0, 120.0], unready=1, target=50) == 5
    # scale-down with a pod missing its metric: it counts as 100 % -> (10+10+100)/3 = 40 % of 50 -> ceil(0.8*3) = 3
    assert utilization_replicas(3, [10.0, 10.0], unready=0, target=50, missing=1) == 3
    assert utilization_replicas(3, [], unready=3, target=50) is None


def _scale_down_to(hpa: HPAController, start: int, want: int, seconds: int) -> list[tuple[int, int]]:
    """Sync every 15 s for ``seconds`` with the metric asking for ``want``; the (time, replicas) changes."""
    current, changes = start, []
    for now in range(0, seconds, 15):
        new = hpa.reconcile(now, current, want)
        if new != current:
            changes.append((now, new))
        current = new
    return changes


def test_scale_down_policies_docs_example_80_to_10():
    # docs: Pods 4 / 60 s and Percent 10 / 60 s; "if there are 80 replicas and the target has to be scaled down to 10
    # replicas then during the first step 8 replicas will be reduced. In the next iteration when the number of replicas
    # is 72, 10% of the pods is 7.2 but the number is rounded up to 8"; "the second policy will only be used when the
    # number of pod replicas is more than 40. With 40 or less replicas, the first policy will be applied."
    down = ScalingRules((ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60)), "Max", 0)
    hpa = HPAController(1, 100, Behavior(scale_down=down))
    changes = _scale_down_to(hpa, 80, 10, 60 * 12)
    assert changes[:2] == [(0, 72), (60, 64)]  # one step per 60 s period, none in between
    steps = [b - a for (_, a), (_, b) in zip([(None, 80), *changes], changes)]
    replicas_before = [80] + [r for _, r in changes[:-1]]
    for before, step in zip(replicas_before, steps):
        assert -step == (max(4, before - int(before * 0.9)) if before > 40 else 4)


def test_select_policy_min_and_disabled():
    down = ScalingRules((ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60)), "Min", 0)
    assert HPAController(1, 100, Behavior(scale_down=down)).reconcile(0, 80, 10) == 76  # the smaller change
    disabled = ScalingRules((ScalingPolicy("Percent", 100, 15),), "Disabled", 0)
    hpa = HPAController(1, 100, Behavior(scale_down=disabled))
    assert _scale_down_to(hpa, 80, 10, 600) == []
    # scaling up is untouched by a disabled scale-down
    assert hpa.reconcile(600, 80, 90) == 90


def test_default_scale_up_is_max_of_100_percent_and_4_pods_per_15_s():
    hpa = HPAController(1, 100)
    assert hpa.reconcile(0, 1, 50) == 5  # +4 pods beats +100 %
    assert hpa.reconcile(15, 5, 50) == 10  # +100 % beats +4 pods
    assert hpa.reconcile(20, 10, 50) == 10  # still inside the 15 s period of the last step
    assert hpa.reconcile(30, 10, 50) == 20
    assert hpa.reconcile(45, 20, 50) == 40
    assert hpa.reconcile(60, 40, 50) == 50  # capped by the metric


def test_scale_down_stabilization_window_keeps_the_highest_recommendation():
    # docs: "the highest recommendation from within that window" (default 300 s)
    hpa = HPAController(1, 20, Behavior(scale_down=default_scale_down(300)))
    assert hpa.reconcile(0, 10, 10) == 10
    times = list(range(15, 330, 15))
    results = {t: None for t in times}
    current = 10
    for t in times:
        current = hpa.reconcile(t, current, 2)
        results[t] = current
    assert all(results[t] == 10 for t in times if t < 300)  # the 10 at t=0 is inside the window until t=300
    assert results[300] == 2  # window (0, 300] no longer includes t=0


def test_scale_up_stabilization_window_keeps_the_lowest_recommendation():
    up = ScalingRules((ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)), "Max", 60)
    hpa = HPAController(1, 20, Behavior(scale_up=up))
    assert hpa.reconcile(0, 2, 2) == 2
    assert hpa.reconcile(15, 2, 8) == 2  # 2 is still in the last 60 s
    assert hpa.reconcile(60, 2, 8) == 6  # the window has passed; the rate limit allows max(2 x 2, 2 + 4)
    assert hpa.reconcile(75, 6, 8) == 8


def test_min_max_bounds_win_without_the_metric_and_zero_replicas_means_disabled():
    hpa = HPAController(2, 5)
    assert hpa.reconcile(0, 9, None) == 5
    assert hpa.reconcile(15, 1, None) == 2
    assert hpa.reconcile(30, 3, 50) == 5
    assert hpa.reconcile(45, 3, None) == 3  # no metric: no change
    assert hpa.reconcile(60, 0, 50) == 0  # parked at zero (by KEDA): the HPA leaves it


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ScalingPolicy("Replicas", 1, 15), "policy type"),
        (lambda: ScalingPolicy("Pods", 0, 15), "policy value"),
        (lambda: ScalingPolicy("Pods", 1, 3600), "period_s"),
        (lambda: ScalingRules((), "Maximum", 0), "select_policy"),
        (lambda: ScalingRules((), "Max", -1), "stabilization_window_s"),
        (lambda: HPAController(0, 5), "min_replicas"),
        (lambda: HPAController(3, 2), "max_replicas"),
    ],
)
def test_bad_settings_are_one_line_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()
