"""Cost arithmetic with a fake clock."""

from __future__ import annotations

import pytest

from mlcost_pl.cost import CostMeter, instances_needed
from tests.helpers.clock import FakeClock


def test_dollars_accrue_from_wall_time_at_each_market_rate():
    clock = FakeClock()
    meter = CostMeter(usd_per_hour=1.2, on_demand_usd_per_hour=3.6, spot_usd_per_hour=1.2, clock=clock)
    meter.start()
    clock.t += 1800  # half an hour
    meter.tick(steps=100, samples=6400)
    assert meter.usd_total == pytest.approx(0.6)
    assert meter.usd_on_demand_total == pytest.approx(1.8)
    assert meter.usd_spot_total == pytest.approx(0.6)
    assert meter.usd_per_step == pytest.approx(0.006)
    # projected to 300 steps: 0.6 spent + 200 x 0.006
    assert meter.projected_usd(200) == pytest.approx(1.8)
    window = meter.window()
    assert window.samples_per_s == pytest.approx(6400 / 1800) and window.usd_per_step == pytest.approx(0.006)
    clock.t += 36
    meter.tick(steps=2, samples=128)
    window = meter.window()
    assert window.steps == 2 and window.usd == pytest.approx(0.012) and window.usd_per_step == pytest.approx(0.006)


def test_no_accrual_while_stopped_and_checkpoint_and_lost_step_dollars():
    clock = FakeClock()
    meter = CostMeter(usd_per_hour=3600.0, clock=clock)  # $1 per second
    meter.start()
    clock.t += 10
    meter.tick(steps=10)
    meter.stop()
    clock.t += 1000  # preempted: nobody is billing us through this meter
    meter.tick()
    assert meter.usd_total == pytest.approx(10.0) and meter.seconds_total == pytest.approx(10.0)
    assert meter.usd_for_seconds(2.5) == pytest.approx(2.5)
    assert meter.usd_for_steps(3) == pytest.approx(3.0)
    assert meter.usd_spot_total is None


def test_state_round_trip_keeps_cumulative_totals_and_new_rates():
    clock = FakeClock()
    first = CostMeter(usd_per_hour=3600.0, clock=clock)
    first.start()
    clock.t += 5
    first.tick(steps=5, samples=40)
    state = first.state_dict()

    second = CostMeter(usd_per_hour=7200.0, clock=clock)  # resumed on a pricier instance
    second.load_state_dict(state)
    second.start()
    clock.t += 5
    second.tick(steps=5, samples=40)
    assert second.usd_total == pytest.approx(5.0 + 10.0)
    assert second.steps_total == 10 and second.samples_total == 80 and second.segments == 2
    assert second.usd_per_step == pytest.approx(2.0)  # this segment only
    assert second.usd_per_step_overall == pytest.approx(1.5)


def test_loading_state_while_running_keeps_what_accrued():
    clock = FakeClock()
    meter = CostMeter(usd_per_hour=3600.0, clock=clock)
    meter.start()
    clock.t += 2
    meter.tick(steps=1)
    meter.load_state_dict({"usd_total": 100.0, "seconds_total": 100.0, "steps_total": 50})  # old keys missing: fine
    assert meter.usd_total == pytest.approx(102.0) and meter.steps_total == 51
    assert meter.usd_per_step == pytest.approx(2.0)


def test_bad_rates_are_named():
    with pytest.raises(ValueError, match="usd_per_hour"):
        CostMeter(usd_per_hour=-1.0)
    with pytest.raises(ValueError, match="spot_usd_per_hour"):
        CostMeter(usd_per_hour=1.0, spot_usd_per_hour=float("nan"))


def test_instances_multiply_by_nodes_and_devices():
    assert instances_needed(1, 1, 1, uses_gpu=True) == 1
    assert instances_needed(4, 8, 8, uses_gpu=True) == 4
    assert instances_needed(2, 4, 1, uses_gpu=True) == 8
    assert instances_needed(2, 3, 2, uses_gpu=True) == 4
    assert instances_needed(3, 2, 0, uses_gpu=False) == 3
    with pytest.raises(ValueError, match="num_nodes"):
        instances_needed(0, 1, 1, uses_gpu=True)
