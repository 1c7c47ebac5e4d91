"""utils.checks names the argument; utils.rng round-trips every RNG through a weights_only checkpoint."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from mlcost_pl.utils.checks import check_bool, check_choice, check_int, check_number
from mlcost_pl.utils.rng import capture_rng_states, restore_rng_states


@pytest.mark.parametrize("call, message", [
    (lambda: check_int("every_n_steps", 2.5), "every_n_steps must be an integer >= 1, got 2.5"),
    (lambda: check_int("keep_last", True), "keep_last must be an integer >= 1, got True"),
    (lambda: check_number("poll_seconds", "5"), "poll_seconds must be a number > 0, got '5'"),
    (lambda: check_number("backoff_s", -1, strict=False), "backoff_s must be a number >= 0, got -1"),
    (lambda: check_number("every_seconds", float("inf")), "every_seconds must be a number > 0"),
    (lambda: check_bool("async_save", "false"), "async_save must be true or false, got 'false'"),
    (lambda: check_choice("market", "reserved", ("on_demand", "spot")), "market must be one of 'on_demand', 'spot'"),
])
def test_errors_name_the_argument(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


def test_rng_round_trip_through_a_weights_only_checkpoint():
    state = capture_rng_states()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    buf = io.BytesIO()
    torch.save({"rng": state}, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["rng"]
    restore_rng_states(loaded)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]
