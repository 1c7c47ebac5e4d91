"""mlcost_pl.savings.report: rows, monthly dollars, the combined estimate and the writers, without any model."""

from __future__ import annotations

import json

import pytest

from mlcost_pl.savings.report import (
    CLAIMS,
    FAILED,
    MEASURED,
    NOT_MEASURED,
    Row,
    check_workload,
    combined,
    monthly_bills,
    monthly_usd,
    to_markdown,
    write_report,
)

BILLS = {"train": 1000.0, "serve": 400.0, "storage": None}


def test_row_checks_key_and_status():
    with pytest.raises(ValueError, match="savings.rows: unknown row 'nope'"):
        Row("nope")
    with pytest.raises(ValueError, match="a measured row needs a saving"):
        Row("spot", None, MEASURED)
    with pytest.raises(ValueError, match="only a measured row"):
        Row("spot", 0.5, NOT_MEASURED)
    assert Row("spot", 0.5, MEASURED).claim == "60-90%"
    assert set(CLAIMS) >= {"spot", "precision", "quantization", "batching", "autoscale", "compression"}


@pytest.mark.parametrize(("train", "pred", "match"), [(0, 0, "both 0"), (-1, 5, "train_hours_per_month"),
                                                      (5, float("nan"), "predictions_per_month")])
def test_bad_workload_is_one_line(train, pred, match):
    with pytest.raises(ValueError, match=match):
        check_workload(train, pred)


def test_monthly_bills_and_usd():
    bills = monthly_bills(2.0, 100, 3_600_000, replica_rps=10)
    assert bills == {"train": 200.0, "serve": 200.0, "storage": 0.0}
    assert monthly_usd(Row("spot", 0.25, MEASURED), bills) == 50.0
    assert monthly_usd(Row("precision", -0.1, MEASURED), bills) == pytest.approx(-20.0)
    assert monthly_usd(Row("batching"), bills) is None
    assert monthly_usd(Row("compression", 0.8, MEASURED), BILLS) is None  # storage unpriced
    with pytest.raises(ValueError, match="savings.replica_rps"):
        monthly_bills(2.0, 1, 1, replica_rps=0)


def test_combined_composes_multiplicatively_and_skips_losers():
    rows = [Row("spot", 0.5, MEASURED), Row("precision", 0.2, MEASURED), Row("batch_size", -0.3, MEASURED),
            Row("autoscale", 0.25, MEASURED), Row("quantization", None, FAILED, "failed: x"), Row("compression", 0.9, MEASURED)]
    total = combined(rows, BILLS)
    assert total["bills"]["train"]["after_usd"] == pytest.approx(1000 * 0.5 * 0.8)  # not 1000 * (1 - 0.7)
    assert total["bills"]["train"]["techniques"] == ["spot", "precision"]  # batch_size costs more: left out
    assert total["bills"]["serve"]["after_usd"] == pytest.approx(300.0)
    assert "storage" not in total["bills"]
    assert total["before_usd"] == 1400 and total["after_usd"] == pytest.approx(700.0)
    assert total["saving"] == pytest.approx(0.5)
    assert "multiplicatively" in total["assumption"]


def test_combined_takes_one_training_path_not_both():
    """Transfer already includes the feature cache and replaces full training: never stacked with the step-time rows."""
    rows = [Row("spot", 0.5, MEASURED), Row("batch_size", 0.2, MEASURED), Row("precision", 0.1, MEASURED),
            Row("transfer", 0.8, MEASURED), Row("feature_cache", 0.5, MEASURED)]
    train = combined(rows, BILLS)["bills"]["train"]
    assert train["techniques"] == ["spot", "transfer"]  # 0.2 kept by transfer beats 0.8 x 0.9 = 0.72 by the full path
    assert train["after_usd"] == pytest.approx(1000 * 0.5 * 0.2)
    assert "batch_size, precision, feature_cache" in train["path"]
    # the full-training path wins when it saves more; the fine-tune rows are then left out, not stacked
    rows = [Row("batch_size", 0.6, MEASURED), Row("precision", 0.5, MEASURED), Row("feature_cache", 0.3, MEASURED)]
    train = combined(rows, BILLS)["bills"]["train"]
    assert train["techniques"] == ["batch_size", "precision"] and "feature_cache" in train["path"]
    assert train["after_usd"] == pytest.approx(1000 * 0.4 * 0.5)


def test_writers(tmp_path):
    rows = [Row("spot", 0.55, MEASURED, "spot note", "cmd a"), Row("precision", -0.12, MEASURED, "cpu", "cmd b"),
            Row("quantization", None, FAILED, "failed: UserInputError: export failed the gate"),
            Row("batching", None, NOT_MEASURED, "not measured here: no time")]
    md = to_markdown(rows, BILLS, combined(rows, BILLS), {"model": "tiny_cnn"})
    assert "**-12.0% (costs more here)**" in md and "not measured here: no time" in md and "cmd a" in md
    total = write_report(rows, BILLS, {"model": "tiny_cnn"}, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "savings.json").read_text())
    assert [r["key"] for r in data["rows"]] == ["spot", "precision", "quantization", "batching"]
    assert data["rows"][0]["usd_per_month"] == pytest.approx(550.0) and data["rows"][3]["usd_per_month"] is None
    assert data["combined"]["after_usd"] == pytest.approx(total["after_usd"])
    assert (tmp_path / "out" / "savings.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["savings.json", "savings.md", "savings.png"]


def test_negative_dollars_read_as_money():
    from mlcost_pl.savings.report import table_rows

    cells = table_rows([Row("precision", -0.5, MEASURED)], BILLS)[0]
    assert cells[2] == "-50.0%" and cells[3] == "-$500.00"


def test_quiet_puts_logging_back():
    """A row run from a test or a notebook must not leave Lightning's INFO messages silenced (it once hid
    `trainer.precision=auto -> ...` from a later test)."""
    import logging

    import lightning.pytorch  # noqa: F401  (its import sets INFO; quiet() imports it, so compare after that)

    from mlcost_pl.savings.rows.common import quiet, quietly

    log = logging.getLogger("lightning.pytorch")
    before = log.level
    with quiet():
        assert log.level == logging.WARNING
    assert log.level == before
    assert quietly(lambda ctx: logging.getLogger("litdata").level)(None) == logging.WARNING
    assert log.level == before
