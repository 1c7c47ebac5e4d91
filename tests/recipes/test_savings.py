"""recipes.savings end to end on a tiny config: rows measured, a bad row is one line, the files are written."""

from __future__ import annotations

import json

import pytest

from recipes.savings import savings
from tests.helpers.cfg import compose_cfg

TINY = ["model=tiny_cnn", "data.image_size=16", "savings.quick=true"]


def test_savings_rows_and_files(tmp_path, capsys):
    cfg = compose_cfg("savings", [*TINY, "savings.rows=[autoscale,batching,spot]", "savings.instance=no-such-gpu",
                                  "savings.replica_rps=100"], tmp_path)
    results, objects = savings(cfg)
    rows = {r.key: r for r in objects["rows"]}
    assert rows["autoscale"].status == "measured" and 0 < rows["autoscale"].saving < 1
    assert "given by savings.replica_rps, not measured" in rows["autoscale"].note
    # no price, so no export to serve: one line naming the instance
    assert rows["batching"].status == "failed" and "savings.instance" in rows["batching"].note
    # an unknown instance: the rows that need a price fail in one line, the others still run
    assert rows["spot"].status == "failed" and "no-such-gpu" in rows["spot"].note and "\n" not in rows["spot"].note
    out = tmp_path / "run"
    data = json.loads((out / "savings.json").read_text())
    assert [r["key"] for r in data["rows"]] == ["autoscale", "batching", "spot"]
    assert (out / "savings.png").exists() and "| auto-scaling |" in (out / "savings.md").read_text()
    printed = capsys.readouterr().out
    assert "[1/3] auto-scaling" in printed and "left: batch inference" not in printed  # keys, not names, are listed
    assert "classic claim" in printed


def test_savings_bad_input_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="savings.rows: unknown"):
        savings(compose_cfg("savings", [*TINY, "savings.rows=[nope]"], tmp_path))
    with pytest.raises(ValueError, match="both 0"):
        savings(compose_cfg("savings", [*TINY, "savings.train_hours_per_month=0", "savings.predictions_per_month=0"], tmp_path))
    with pytest.raises(ValueError, match="savings.cache_hit_rate"):
        savings(compose_cfg("savings", [*TINY, "savings.cache_hit_rate=1.5"], tmp_path))
    with pytest.raises(ValueError, match="savings.replica_rps"):
        savings(compose_cfg("savings", [*TINY, "savings.replica_rps=0"], tmp_path))


@pytest.mark.slow
def test_savings_quick_all_rows(tmp_path):
    cfg = compose_cfg("savings", TINY, tmp_path)
    results, objects = savings(cfg)
    rows = {r.key: r for r in objects["rows"]}
    assert set(rows) == set(cfg.savings.rows)
    for key in ("spot", "precision", "quantization", "batching", "autoscale", "compression"):
        assert rows[key].status == "measured", rows[key].note
    assert 0 < rows["compression"].saving < 1
