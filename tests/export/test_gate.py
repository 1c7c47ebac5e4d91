"""The accuracy gate: schedule, fallback keeping the worst layers in fp32, failure with figures."""

from __future__ import annotations

import pytest
import torch
import torchmetrics

from mlcost_pl.errors import UserInputError
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
    chosen = module_metric(trained[0])
    assert chosen.name == "val/acc" and type(chosen.metric).__name__ == "MulticlassAccuracy"
    assert "val_acc" in chosen.source
    with pytest.raises(ValueError, match="no metric to gate Linear on"):
        module_metric(torch.nn.Linear(2, 2))


class _Net(torch.nn.Module):
    """A hand-written model: metrics as users declare them, or none at all (accuracy computed by hand)."""

    def __init__(self, metrics: dict | None = None) -> None:
        super().__init__()
        for name, metric in (metrics or {}).items():
            setattr(self, name, metric)
        self.net = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.net(x)


LOGITS, TARGET = torch.randn(16, 3), torch.randint(0, 3, (16,))


def test_a_loss_metric_declared_first_is_skipped():
    net = _Net({"val_loss": torchmetrics.MeanMetric(), "val_acc": torchmetrics.Accuracy(task="multiclass", num_classes=3)})
    chosen = module_metric(net, LOGITS, TARGET)
    assert chosen.name == "val/acc" and "MeanMetric" not in type(chosen.metric).__name__


def test_a_metric_that_does_not_take_logits_and_target_is_skipped():
    net = _Net({"val_f1": torchmetrics.F1Score(task="binary"), "val_acc": torchmetrics.Accuracy(task="multiclass", num_classes=3)})
    assert module_metric(net, LOGITS, TARGET).name == "val/acc"


def test_no_metric_at_all_gates_on_top1_of_the_logits_and_says_so():
    chosen = module_metric(_Net(), LOGITS, TARGET)
    assert chosen.name == "top1" and "top-1 accuracy of the logits" in chosen.source
    expected = float((LOGITS.argmax(1) == TARGET).float().mean())
    chosen.metric.update(LOGITS, TARGET)
    assert float(chosen.metric.compute()) == pytest.approx(expected)


def test_export_metric_names_one_or_fails_in_one_line_listing_candidates():
    net = _Net({"val_loss": torchmetrics.MeanMetric(), "val_acc": torchmetrics.Accuracy(task="multiclass", num_classes=3),
                "val_top2": torchmetrics.Accuracy(task="multiclass", num_classes=3, top_k=2)})
    assert module_metric(net, LOGITS, TARGET, name="val/top2").name == "val/top2"
    assert module_metric(net, LOGITS, TARGET, name="val_top2").name == "val/top2"
    assert module_metric(net, LOGITS, TARGET, name="top1").name == "top1"
    with pytest.raises(UserInputError, match=r"export.metric='val_f1' is not .* candidates: val_acc, val_loss, val_top2, top1"):
        module_metric(net, LOGITS, TARGET, name="val_f1")
    with pytest.raises(UserInputError, match=r"export.metric='val_loss' does not evaluate \(logits, target\)"):
        module_metric(net, LOGITS, TARGET, name="val_loss")


def test_nothing_fits_is_one_line_listing_candidates():
    net = _Net({"val_loss": torchmetrics.MeanMetric()})
    with pytest.raises(UserInputError) as err:
        module_metric(net, torch.randn(16), torch.randn(16))  # a regression output: no top-1 either
    text = str(err.value)
    assert "\n" not in text and "val_loss (MeanMetric aggregates a single value)" in text and "export.metric=" in text


def test_export_of_a_module_without_metrics_gates_on_top1(trained, tmp_path):
    model, dm = trained
    plain = torch.nn.Sequential(model.backbone, model.head)  # the same weights, no torchmetrics attribute
    report = export(plain, dm, tmp_path / "out", **FAST)
    assert report["metric"]["name"] == "top1" and "top-1 accuracy of the logits" in report["metric"]["source"]
    assert report["gate"]["passed"] and report["gate"]["metric"] == "top1" and report["metrics"]["torch_fp32"] > 0.9


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
