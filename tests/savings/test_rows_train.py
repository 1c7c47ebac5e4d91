"""The training-side rows of recipes.savings (batch_size, transfer, feature_cache) on a tiny config."""

from __future__ import annotations

import pytest

from mlcost_pl.savings.rows import MEASURES, RunContext
from mlcost_pl.savings.rows.batch_size import first_candidate
from mlcost_pl.savings.rows.transfer import optimizer_override, split_classes
from recipes.savings import NOT_HERE
from tests.helpers.cfg import compose_cfg

TINY = ["model=tiny_cnn", "data.image_size=16", "savings.quick=true"]


def _measure(key: str, tmp_path, *overrides: str):
    cfg = compose_cfg("savings", [*TINY, *overrides], tmp_path)
    return MEASURES[key](RunContext(cfg, None, tmp_path / "scratch"))


def test_rows_are_wired():
    for key in ("batch_size", "transfer", "feature_cache"):
        assert key in MEASURES and key not in NOT_HERE


def test_pure_helpers(tmp_path):
    assert (first_candidate(64), first_candidate(48), first_candidate(33)) == (32, 24, 33)
    assert split_classes(compose_cfg("savings", TINY, tmp_path)) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    assert split_classes(compose_cfg("savings", [*TINY, "data.classes=[1,3,5,7,9]", "data.num_classes=null"], tmp_path)) == (
        [1, 3], [5, 7, 9])
    with pytest.raises(ValueError, match="data.classes.*>= 4"):
        split_classes(compose_cfg("savings", [*TINY, "data.classes=[1,2,3]", "data.num_classes=null"], tmp_path))
    with pytest.raises(ValueError, match="no `classes` option"):
        split_classes(compose_cfg("savings", ["data=cifar10"], tmp_path))
    assert optimizer_override(None) == {}
    with pytest.raises(ValueError, match="savings.transfer_lr"):
        optimizer_override(-1)


def test_batch_size_row(tmp_path):
    row = _measure("batch_size", tmp_path, "data.batch_size=16")
    f = row.figures
    assert row.status == "measured" and f["configured"] == 16
    # the search tried the configured batch, one below it, and went no further than 4x (quick)
    assert {8, 16} <= set(f["search_samples_per_s"]) and max(f["search_samples_per_s"]) <= 64 == f["batch_size_max"]
    assert f["chosen"] in f["search_samples_per_s"]
    if f["chosen"] == 16:  # already the pick: nothing to change, nothing saved
        assert row.saving == 0.0 and list(f["samples_per_s"]) == [16]
    else:  # the saving is the re-measured seconds per sample, pick vs configured
        sps = f["samples_per_s"]
        assert row.saving == pytest.approx(1 - sps[16] / sps[f["chosen"]])
        assert all(len(v) == f["rounds"] for v in f["per_round"].values())
    assert "convergence per epoch" in row.note and "NOT measured" in row.note
    assert row.command.endswith("'savings.rows=[batch_size]'")  # quoted: pasted into zsh it must not glob
    with pytest.raises(ValueError, match="savings.batch_size_max"):
        _measure("batch_size", tmp_path, "data.batch_size=16", "savings.batch_size_max=8")


def test_feature_cache_row(tmp_path):
    row = _measure("feature_cache", tmp_path, "savings.feature_cache_epochs=2")
    med = row.figures["median"]
    # no cache: the backbone computes every train and val sample every epoch; cold: once each; warm: never
    assert med["none"]["computed"] == 2 * med["cold"]["computed"] > 0
    assert med["warm"]["computed"] == 0 == med["warm"]["store_misses"]
    assert med["cold"]["store_misses"] == med["cold"]["computed"]
    assert row.saving == pytest.approx(1 - med["cold"]["seconds"] / med["none"]["seconds"])
    for arm in ("cold", "warm"):  # the same features, cached or computed: the same head
        assert med[arm]["acc"] == pytest.approx(med["none"]["acc"], abs=0.02)
    with pytest.raises(ValueError, match="savings.feature_cache_epochs"):
        _measure("feature_cache", tmp_path, "savings.feature_cache_epochs=1")


def test_transfer_row(tmp_path):
    # a short bound: 2 epochs of pretraining and per arm on 16x16 digits, batch 32
    row = _measure("transfer", tmp_path, "trainer.max_epochs=2", "data.batch_size=32", "savings.transfer_target=0.55")
    f = row.figures
    assert f["pretrain_classes"] == [0, 1, 2, 3, 4] and f["task_classes"] == [5, 6, 7, 8, 9]
    assert "NOT counted" in row.note and f["pretrain_s"] > 0
    cached, scratch = f["runs"]["cached"][0], f["runs"]["scratch"][0]
    if cached["seconds"] is None:  # the cached arm never got there: the row fails and says so
        assert row.status == "failed" and "cached never reached it" in row.note
    else:
        assert row.status == "measured" and cached["best"] >= 0.55
        assert row.saving == pytest.approx(1 - f["cached_s"] / f["scratch_s"])
        assert f["winner"] == ("cached" if row.saving > 0 else "scratch") and f"{f['winner']} won" in row.note
        if scratch["seconds"] is None:
            assert "lower bound" in row.note and f["scratch_s"] == scratch["run_s"]
