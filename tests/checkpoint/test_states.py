"""claim_callback_states: old keys (instance, market, folder) map to today's keys; leftovers are reported."""

from __future__ import annotations

from mlcost_pl.checkpoint.states import apply_renames, claim_callback_states


def test_old_keys_move_to_the_new_ones_and_the_rest_is_unclaimed():
    stored = ["CostMonitor{'instance': 'g5.xlarge', 'market': 'spot'}", "SpotCheckpoint{'dirpath': '/old'}",
              "PreemptionHandler", "ModelCheckpoint{'monitor': None}"]
    on_trainer = [("CostMonitor", "CostMonitor"), ("SpotCheckpoint", "SpotCheckpoint"), ("PreemptionHandler", "PreemptionHandler")]
    renames, unclaimed = claim_callback_states(stored, on_trainer)
    assert renames == {stored[0]: "CostMonitor", stored[1]: "SpotCheckpoint"}
    assert unclaimed == ["ModelCheckpoint{'monitor': None}"]
    moved = apply_renames(dict.fromkeys(stored, 1), renames)
    assert set(moved) == {"CostMonitor", "SpotCheckpoint", "PreemptionHandler", "ModelCheckpoint{'monitor': None}"}


def test_ambiguous_old_keys_are_not_guessed():
    stored = ["CostMonitor{'instance': 'a'}", "CostMonitor{'instance': 'b'}"]
    renames, unclaimed = claim_callback_states(stored, [("CostMonitor", "CostMonitor")])
    assert renames == {} and unclaimed == sorted(stored)


def test_current_keys_are_claimed_as_they_are():
    assert claim_callback_states(["CostMonitor"], [("CostMonitor", "CostMonitor")]) == ({}, [])
