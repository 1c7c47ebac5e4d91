"""Pure search strategies: max_fit (growth then bisection), throughput pick, global-batch fitting."""

from __future__ import annotations

import pytest

from mlcost_pl.rightsizing.search import fit_global_batch, max_fit_search, pick_throughput, throughput_search


@pytest.mark.parametrize("limit", [33, 100, 300, 777, 1000, 2000])
def test_max_fit_lands_within_5_percent_below_the_limit_in_12_trials(limit):
    calls = []

    def fits(b):
        calls.append(b)
        return b <= limit

    r = max_fit_search(fits, init=32)  # default tolerance and safety margin
    assert 0.95 * limit <= r.batch_size <= limit
    assert r.largest_fit <= limit and r.num_trials == len(calls) <= 12


def test_max_fit_goes_down_when_init_does_not_fit_and_respects_the_bound():
    r = max_fit_search(lambda b: b <= 5, init=64, safety_margin=0.0)
    assert r.batch_size == 5 and r.trials[0] == (64, False)
    r = max_fit_search(lambda b: True, init=32, max_batch_size=100)
    assert r.largest_fit == 100 and max(b for b, _ in r.trials) == 100
    assert max_fit_search(lambda b: False, init=8).batch_size == 0


def test_max_fit_safety_margin_and_trial_budget():
    r = max_fit_search(lambda b: b <= 1000, init=32, safety_margin=0.1, tolerance=0.0)
    assert r.largest_fit == 1000 and r.batch_size == 900
    assert max_fit_search(lambda b: b <= 1000, init=1, max_trials=4).num_trials == 4


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"init": 0}, "init_batch_size"), ({"tolerance": 1.0}, "tolerance"), ({"safety_margin": -0.1}, "safety_margin"),
     ({"max_trials": 1}, "max_trials"), ({"growth": 1.0}, "growth"), ({"max_batch_size": 0}, "max_batch_size")],
)
def test_max_fit_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        max_fit_search(lambda b: True, **kwargs)


def test_pick_throughput_takes_the_smallest_within_tolerance():
    speeds = {16: 500.0, 32: 960.0, 64: 1000.0, 128: 990.0}
    assert pick_throughput(speeds, 0.05) == 32
    assert pick_throughput(speeds, 0.0) == 64
    with pytest.raises(ValueError, match="samples_per_s"):
        pick_throughput({})


def test_throughput_search_stops_at_oom_and_picks_near_best():
    speed = {8: 100.0, 16: 180.0, 32: 200.0, 64: 205.0}  # 128 "does not fit"
    r = throughput_search(lambda b: speed.get(b), init=8, tolerance=0.05)
    assert r.batch_size == 32 and r.largest_fit == 64
    assert r.trials[-1] == (128, False)
    assert r.samples_per_s[r.batch_size] >= 0.95 * max(r.samples_per_s.values())


def test_throughput_search_stops_after_patience_drops():
    r = throughput_search(lambda b: 1000.0 / b, init=1, max_batch_size=1 << 20, patience=2)
    assert r.batch_size == 1 and r.num_trials == 3


def test_fit_global_batch_keeps_the_global_batch_exact():
    assert fit_global_batch(300, 1024) == (256, 4)
    assert fit_global_batch(300, 64) == (64, 1)
    assert fit_global_batch(100, 96, world_size=2) == (48, 1)
    b, acc = fit_global_batch(7, 90)
    assert b * acc == 90 and b <= 7
    with pytest.raises(ValueError, match="global_batch_size"):
        fit_global_batch(8, 33, world_size=2)
