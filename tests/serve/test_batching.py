"""The AIMD controller with an injected clock, and the batching loop's collection on a real queue (no server)."""

from __future__ import annotations

import queue

import numpy as np
import pytest

from mlcost_pl.serve.batching import AIMDBatchController
from tests.helpers.clock import FakeClock


def run_batch(c: AIMDBatchController, clock: FakeClock, size: int, latency_ms: float) -> float:
    start = c.start()
    clock.t += latency_ms / 1e3
    return c.finish(start, size)


def test_grows_additively_while_inside_the_budget_and_halves_when_over():
    clock = FakeClock(0.0)
    c = AIMDBatchController(slo_ms=40, max_batch=64, clock=clock)  # budget: 20 ms per batch
    assert c.budget_ms == 20 and c.max_batch == 1
    for _ in range(10):
        run_batch(c, clock, c.max_batch, latency_ms=1.9 * c.max_batch)  # 1.9 ms per sample
    assert c.max_batch == 11  # 1 + 10 full, in-budget batches
    run_batch(c, clock, c.max_batch, latency_ms=25.0)  # over budget
    assert c.max_batch == 5 and c.decreases == 1
    caps = []
    for _ in range(50):
        run_batch(c, clock, c.max_batch, latency_ms=1.9 * c.max_batch)
        caps.append(c.max_batch)
    assert max(caps) == 11 and min(caps) == 5 and c.decreases > 2  # the AIMD saw-tooth around the budget


def test_grows_only_when_the_cap_binds_and_stays_in_bounds():
    clock = FakeClock(0.0)
    c = AIMDBatchController(slo_ms=50, min_batch=2, max_batch=4, start_batch=2, clock=clock)
    for _ in range(5):
        run_batch(c, clock, 1, latency_ms=1.0)  # light load: partial batches say nothing about a bigger cap
    assert c.max_batch == 2
    for _ in range(10):
        run_batch(c, clock, c.max_batch, latency_ms=1.0)
    assert c.max_batch == 4  # max_batch bound
    for _ in range(5):
        run_batch(c, clock, c.max_batch, latency_ms=500.0)
    assert c.max_batch == 2  # min_batch bound


def test_one_slow_batch_in_the_window_blocks_growth_until_it_ages_out():
    clock = FakeClock(0.0)
    c = AIMDBatchController(slo_ms=50, max_batch=64, start_batch=8, window=4, percentile=100, clock=clock)
    run_batch(c, clock, 8, latency_ms=24.0)  # in budget (25 ms) -> grow to 9
    assert c.max_batch == 9 and c.tail_ms() == pytest.approx(24.0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"slo_ms": 0}, "serve.slo_ms"),
    ({"min_batch": 0}, "min_batch"),
    ({"backoff": 1.0}, "backoff"),
    ({"headroom": 0}, "headroom"),
    ({"start_batch": 99, "max_batch": 8}, "start_batch"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AIMDBatchController(**kwargs)


class Transport:
    """Collects what the loop sends (the START notices)."""

    def __init__(self) -> None:
        self.sent = []

    def send(self, item, consumer_id):
        self.sent.append((consumer_id, item))


class API:
    request_timeout = -1
    metrics = None


def _item(uid: str, n: int = 1):
    return (0, uid, 0.0, {"x": np.zeros((n, 1, 8, 8), np.float32)})


def test_loop_dispatches_what_is_queued_at_once_up_to_the_cap_in_order():
    from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError

    from mlcost_pl.serve.server import AdaptiveBatchingLoop

    loop = AdaptiveBatchingLoop(slo_ms=50, max_batch_size=8)
    q: queue.Queue = queue.Queue()
    q.put(_item("a"))
    payloads, timed_out = loop.get_batch_requests(API(), q, Transport())
    assert [p[1] for p in payloads] == ["a"] and not timed_out  # idle worker: no wait for more
    loop.controller.max_batch = 4
    for uid, n in (("b", 2), ("c", 1), ("d", 2), ("e", 1)):
        q.put(_item(uid, n))
    payloads, _ = loop.get_batch_requests(API(), q, Transport())
    assert [p[1] for p in payloads] == ["b", "c"]  # d (2 samples) does not fit in 4 - 3; it waits, first in line
    payloads, _ = loop.get_batch_requests(API(), q, Transport())
    assert [p[1] for p in payloads] == ["d", "e"]
    q.put(_item("f", 9))  # larger than the cap: still served, alone
    payloads, _ = loop.get_batch_requests(API(), q, Transport())
    assert [p[1] for p in payloads] == ["f"]
    q.put(_SENTINEL_VALUE)
    with pytest.raises(_StopLoopError):
        loop.get_batch_requests(API(), q, Transport())
