"""The scaling model: ring all-reduce, overlap with backward, $ per epoch, node-count choices."""

from __future__ import annotations

import pytest

from mlcost_pl.distributed.scaling import ScalingModel, ring_allreduce_seconds


def test_ring_allreduce_formula():
    # 2(n-1)/n x bytes / bandwidth: 8 nodes move 1.75x the gradient over each link
    assert ring_allreduce_seconds(1e9, 8, 8.0) == pytest.approx(1.75)
    assert ring_allreduce_seconds(1e9, 2, 8.0, latency_s=0.01) == pytest.approx(1.0 + 0.02)
    with pytest.raises(ValueError, match="bandwidth_gbps must be > 0"):
        ring_allreduce_seconds(1.0, 2, 0.0)


def _model(**kw) -> ScalingModel:
    base = dict(step_s=1.0, grad_bytes=100e6, bandwidth_gbps=8.0, samples_per_epoch=10_000, batch_per_node=100,
                usd_per_node_hour=3.6, bucket_bytes=25e6)
    return ScalingModel(**{**base, **kw})


def test_overlap_hides_comm_behind_backward_until_the_link_is_slower():
    fast = _model(bandwidth_gbps=800.0)  # comm 0.002 s on 2 nodes: only the last bucket (1/4) shows
    p = fast.predict(2)
    assert p.exposed_comm_s == pytest.approx(p.comm_s / 4)
    slow = _model(bandwidth_gbps=0.8)  # comm 1.0 s vs backward 0.667 s: the difference and a bucket's worth show
    q = slow.predict(2)
    assert q.comm_s == pytest.approx(1.0)
    assert q.exposed_comm_s == pytest.approx(1.0 - (2 / 3) * 0.75)
    assert fast.predict(1).step_s == 1.0 and fast.predict(1).efficiency == 1.0


def test_epoch_cost_speedup_and_choices():
    m = _model(bandwidth_gbps=0.8)
    one, two = m.predict(1), m.predict(2)
    assert one.epoch_s == 100.0 and one.usd_per_epoch == pytest.approx(0.1)
    assert two.epoch_s == pytest.approx(50 * two.step_s)
    assert two.speedup == pytest.approx(100.0 / two.epoch_s) and two.efficiency == pytest.approx(two.speedup / 2)
    assert m.cheapest([1, 2, 4]).nodes == 1  # communication only adds node-seconds
    assert m.fastest_within([1, 2, 4], budget_usd=1.0).nodes == 4
    assert m.fastest_within([1, 2, 4], budget_usd=0.12).nodes == 1
    assert m.fastest_within([1, 2, 4], budget_usd=0.01) is None


@pytest.mark.parametrize(("kw", "match"), [({"step_s": 0}, "step_s must be > 0"), ({"backward_fraction": 1.5}, "backward_fraction"),
                                           ({"usd_per_node_hour": -1}, "usd_per_node_hour")])
def test_bad_inputs_name_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        _model(**kw)
