"""The replay simulator: pods, start-up delay, the SLO-miss model, HPA and KEDA dynamics, and dollars."""

from __future__ import annotations

import numpy as np
import pytest

from mlcost_pl.autoscale.capacity import Capacity
from mlcost_pl.autoscale.hpa import Behavior, default_scale_down
from mlcost_pl.autoscale.simulate import HPAPolicy, StaticPolicy, classic_hpa, keda_policy, simulate
from mlcost_pl.autoscale.trace import Trace


def steps(*segments: tuple[int, float]) -> Trace:
    """A per-second trace from (seconds, rate) segments."""
    rate = np.concatenate([np.full(n, r, dtype=float) for n, r in segments])
    return Trace(np.arange(len(rate)), rate, "steps")


CAP = Capacity(rps=10, startup_s=30)


def test_static_peak_sizes_for_the_peak_and_misses_nothing():
    r = simulate(steps((600, 25), (600, 41)), CAP, StaticPolicy(), usd_per_replica_hour=2.0)
    assert r.settings == {"replicas": 5} and r.missed == 0
    assert r.replica_hours == pytest.approx(5 * 1200 / 3600) and r.usd == pytest.approx(2 * r.replica_hours)
    under = simulate(steps((100, 25)), CAP, StaticPolicy(replicas=2))
    assert under.missed == pytest.approx(100 * 5) and under.miss_share == pytest.approx(0.2)  # 25 offered, 20 served


def test_constant_load_settles_at_the_target_without_misses():
    r = simulate(steps((1800, 70)), CAP, HPAPolicy(1, 20, target=70.0, metric="cpu"))
    assert r.replicas[0] == 10 and r.replicas[-1] == 10 and r.missed == 0  # 70 req/s at 70 % of 10 req/s per pod


def test_step_up_misses_until_the_new_pods_are_ready():
    # 20 req/s on 3 pods (CPU 66 %), then 60 req/s: the HPA sees it at the next sync, pods take 30 s to be ready
    r = simulate(steps((300, 20), (600, 60)), CAP, HPAPolicy(1, 20, target=70.0))
    first_scale_up = int(np.argmax(r.replicas > r.replicas[0]))
    assert 300 < first_scale_up <= 300 + 15 + 15  # the next sync that sees the step in its 30 s window
    ready_at = int(np.argmax(r.ready > r.ready[0]))
    assert ready_at == first_scale_up + 30
    # before the new pods are ready, everything above 3 x 10 req/s misses; once 6 are ready, nothing
    assert r.missed_per_s[:300].sum() == 0 and r.missed_per_s[300] == pytest.approx(30)
    enough = int(np.argmax(r.ready >= 6))
    assert r.missed_per_s[enough:].sum() == 0 and r.missed == pytest.approx(r.missed_per_s[300:enough].sum())
    # the 30 s window at 315 s holds 15 s at 66 % and 15 s at a saturated 100 %: 83 % -> ceil(3 x 83 / 70) = 4 pods
    assert first_scale_up == 315 and r.replicas[first_scale_up] == 4


def test_cpu_saturates_so_an_overloaded_cpu_hpa_climbs_in_steps_but_requests_per_s_jumps():
    trace = steps((120, 10), (900, 200))
    cpu = simulate(trace, CAP, HPAPolicy(1, 40, target=70.0))
    rps = simulate(trace, CAP, HPAPolicy(1, 40, metric="rps", target=7.0, metric_window_s=30))
    # CPU can show at most 100 % -> ratio <= 1/0.7 per sync; the request rate shows the whole overload at once
    assert cpu.replicas[150] < rps.replicas[150]
    assert rps.missed < cpu.missed


def test_scale_down_waits_for_the_stabilization_window_and_deletes_unready_pods_first():
    r = simulate(steps((900, 80), (1200, 10)), CAP, HPAPolicy(1, 20, target=80.0, behavior=Behavior(scale_down=default_scale_down(300))))
    high = r.replicas[800]
    drop = int(np.argmax(r.replicas[900:] < high)) + 900
    assert drop >= 900 + 300  # not before the window has passed
    assert r.ready[drop] < r.ready[drop - 1]  # ready pods went away (none were starting)


def test_keda_scales_to_zero_after_the_cooldown_and_back_on_traffic():
    trace = steps((300, 30), (900, 0), (300, 30))
    policy = keda_policy(10.0, max_replicas=10, cooldown_s=300, polling_s=30, metric_window_s=60)
    r = simulate(trace, CAP, policy)
    assert r.replicas[200] == 3
    idle_from = 300 + 60  # the 60 s rate window has emptied
    zero = int(np.argmax(r.replicas[300:] == 0)) + 300
    assert idle_from + 300 <= zero <= idle_from + 300 + 60  # cooldown, then the next poll
    back = int(np.argmax(r.replicas[1200:] > 0)) + 1200
    assert back <= 1200 + 30  # the next poll activates it
    assert r.missed_per_s[1200:back + 30].sum() > 0  # requests wait for the pod: cold start misses
    assert r.replicas[-1] >= 3


def test_classic_hpa_keeps_two_replicas_at_night():
    r = simulate(steps((3600, 1)), CAP, classic_hpa())
    assert r.replicas.min() == 2 and r.missed == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: HPAPolicy(metric="memory"), "metric must be one of cpu, rps"),
        (lambda: HPAPolicy(target=0), "target must be > 0"),
        (lambda: HPAPolicy(min_replicas=3, max_replicas=2), "max_replicas"),
        (lambda: HPAPolicy(metric="rps", pods_rps_target=5), "pods_rps_target"),
        (lambda: Capacity(rps=0), r"capacity.rps must be > 0"),
        (lambda: Capacity(rps="fast"), r"capacity.rps must be a number"),
        (lambda: Capacity(rps=10, saturation_rps=5), r"saturation_rps"),
    ],
)
def test_bad_policies_and_capacities_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_window_must_fit_the_control_step():
    with pytest.raises(ValueError, match="metric_window_s"):
        simulate(steps((100, 1)), CAP, HPAPolicy(metric_window_s=20))
