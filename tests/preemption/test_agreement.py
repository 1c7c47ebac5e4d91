"""Agreement: one reduce per agreement step shared by every provider, none in between (pure, no processes)."""

from __future__ import annotations

import pytest

from mlcost_pl.preemption.agreement import Agreement


def test_one_reduce_per_agreement_step_shared_by_all_providers():
    calls = []
    agreement = Agreement(every_n_steps=10, world_size=2)
    flags = {"notice": False, "time": False}
    agreement.register("preemption", lambda: flags["notice"], every_n_steps=5)  # the smallest interval wins
    agreement.register("spot_checkpoint", lambda: flags["time"])

    def reduce(local):
        calls.append(list(local))
        return [v + 1.0 if i == 0 else v for i, v in enumerate(local)]  # the other rank has a notice (slot 0)

    results = [agreement.poll(batch=b, step=b, reduce=reduce) for b in range(1, 11)]
    assert [r is not None for r in results] == [b % 5 == 0 for b in range(1, 11)]
    assert len(calls) == 2 == agreement.reduces
    flags["time"] = True
    assert agreement.poll(batch=15, step=15, reduce=reduce) == {"preemption": True, "spot_checkpoint": True}
    assert agreement.poll(batch=15, step=15, reduce=reduce) is not None and len(calls) == 3  # asked twice, reduced once


def test_one_rank_reads_every_step_without_reducing():
    agreement = Agreement(every_n_steps=10, world_size=1)
    agreement.register("preemption", lambda: True)
    assert agreement.poll(batch=1, step=1, reduce=lambda _: pytest.fail("no reduce with one rank")) == {"preemption": True}


@pytest.mark.parametrize("bad", [0, 2.5, True, "10"])
def test_interval_is_checked_by_its_user_facing_name(bad):
    with pytest.raises(ValueError, match="check_every_n_steps must be an integer >= 1"):
        Agreement(every_n_steps=bad)
