"""The accuracy gate: schedule, fallback keeping the worst layers in fp32, failure with figures."""

from __future__ import annotations

import pytest

from mlcost_pl.export import GateFailedError, export
from mlcost_pl.export.gate import exclusion_schedule, metric_drop, module_metric, run_gate
from tests.export.conftest import CalibrationShift, ConvOnly, train_tiny

FAST = {"latency_iters": 2, "batch_sizes": (1, 8), "verify_samples": 64}


def test_schedule_never_keeps_every_layer():
    assert exclusion_schedule(0) == [0] and exclusion_schedule(1) == [0]
    assert exclusion_schedule(2) == [0, 1]
    assert exclusion_schedule(9) == [0, 1, 2, 4, 8]
    assert metric_drop(0.9, 0.8) == pytest.approx(0.1) and metric_drop(0.5, 0.6, higher_is_better=False) == pytest.approx(0.1)


def test_run_gate_keeps_worst_layers_until_it_passes():
    ranked = [{"name": n, "error": e} for n, e in (("c", 0.9), ("a", 0.5), ("b", 0.1), ("d", 0.0))]
    # The metric recovers once both "c" and "a" are kept in fp32.
    result = run_gate("acc", 0.9, lambda keep: 0.9 if {"c", "a"} <= set(keep) else 0.5, lambda: ranked, 0.01)
    assert result.passed and [k["name"] for k in result.kept_fp32] == ["c", "a"]
    assert [a["kept_fp32"] for a in result.attempts] == [[], ["c"], ["c", "a"]]
    assert "rank 1 of 4" in result.kept_fp32[0]["reason"]
    failed = run_gate("acc", 0.9, lambda keep: 0.5, lambda: ranked, 0.01)
    assert not failed.passed and len(failed.attempts) == 4 and failed.attempts[-1]["kept_fp32"] == ["c", "a", "b"]
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        run_gate("acc", 0.9, lambda keep: 0.9, lambda: ranked, -0.1)


def test_module_metric_is_the_modules_own(trained):
    name, metric = module_metric(trained[0])
    assert name == "val/acc" and type(metric).__name__ == "MulticlassAccuracy"
    with pytest.raises(ValueError, match="no torchmetrics metric"):
        module_metric(__import__("torch").nn.Linear(2, 2))


def test_bad_calibration_falls_back_to_fp32_layers(trained, tmp_path):
    model, dm = trained
    # Calibrating on images at 30% of their real scale clips activations: the first INT8 model loses accuracy.
    report = export(model, CalibrationShift(dm, 0.3), tmp_path / "out", max_accuracy_drop=0.05, **FAST)
    gate = report["gate"]
    assert gate["passed"] and len(gate["attempts"]) >= 2 and gate["attempts"][0]["drop"] > 0.05
    assert gate["kept_fp32"] and all("relative output error" in k["reason"] for k in gate["kept_fp32"])
    assert gate["drop"] <= 0.05
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Layers kept in fp32" in md and gate["kept_fp32"][0]["name"] in md


def test_gate_failure_raises_with_figures_and_writes_nothing(tmp_path):
    model, dm = train_tiny(epochs=8, model=ConvOnly())
    with pytest.raises(GateFailedError, match=r"val/acc fp32 0\.\d+, int8 0\.\d+, drop 0\.\d+ > export.max_accuracy_drop=0.05") as err:
        export(model, CalibrationShift(dm, 0.0), tmp_path / "out", max_accuracy_drop=0.05, **FAST)
    assert not err.value.result.passed and len(err.value.result.attempts) == 2
    assert list(tmp_path.iterdir()) == []
