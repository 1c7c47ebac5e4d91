"""export() end to end on the trained TinyCNN: files, report, atomic output, overwrite, verify."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mlcost_pl.export import ParityError, VerifyError, export, verify
from tests.export.test_onnx_export import DataDependent

FAST = {"latency_iters": 2, "batch_sizes": (1, 8), "verify_samples": 64}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, _trained_once):
    model, dm = _trained_once
    out = tmp_path_factory.mktemp("exp") / "model"
    report = export(model, dm, out, price_per_hour=1.0, **FAST)
    return out, report


def test_export_writes_models_and_a_complete_report(exported):
    out, report = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "model.int8.onnx", "model.onnx", "report.json", "report.md", "verify_set.npz"]
    assert not list(out.parent.glob(".model.tmp-*"))
    on_disk = json.loads((out / "report.json").read_text())
    assert set(on_disk["variants"]) == {"torch_fp32", "ort_fp32", "ort_int8"}
    for v in on_disk["variants"].values():
        assert set(v["latency_ms"]) == {"1", "8"} and v["latency_ms"]["8"]["p99"] >= v["latency_ms"]["8"]["p50"] > 0
        assert v["usd_per_million"] == pytest.approx(1.0 / 3600 * v["latency_ms"]["8"]["p50"] / 1e3 / 8 * 1e6)
    assert on_disk["metrics"]["torch_fp32"] > 0.9
    assert on_disk["gate"]["passed"] and on_disk["metrics"]["ort_int8"] >= on_disk["metrics"]["ort_fp32"] - 0.01
    assert on_disk["parity"]["max_abs"] < 1e-4 and on_disk["parity"]["samples"] > 100
    q = on_disk["quantization"]
    assert (q["activation_type"], q["weight_type"], q["per_channel"]) == ("uint8", "int8", True) and q["reason"]
    assert on_disk["files"]["model.int8.onnx"]["bytes"] < on_disk["files"]["model.onnx"]["bytes"] / 2
    md = (out / "report.md").read_text()
    assert "ort_int8" in md and "$ / 1M predictions" in md and "Why:" in md


def test_verify_passes_then_detects_tampering(exported, tmp_path):
    out, _ = exported
    assert verify(out)["ok"]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / "model.int8.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(VerifyError, match=r"model.int8.onnx: sha256 differs"):
        verify(copy)
    (copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(VerifyError, match="extra.bin: not in the manifest"):
        verify(copy)
    with pytest.raises(FileNotFoundError, match="no export here"):
        verify(tmp_path / "nothing")


def test_existing_out_dir_is_refused_then_replaced_with_overwrite(trained, tmp_path):
    model, dm = trained
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ValueError, match=r"out exists already; pass export.overwrite=true"):
        export(model, dm, out, **FAST)
    assert (out / "old.txt").exists()
    export(model, dm, out, quantize="none", overwrite=True, **FAST)
    assert not (out / "old.txt").exists() and (out / "model.onnx").exists() and not (out / "model.int8.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_mid_export_leaves_nothing(tmp_path):
    """Parity fails after model.onnx was written into the temporary folder: neither folder survives."""

    class Digits:
        def setup(self, stage=None):
            pass

        def train_dataloader(self):
            return [(torch.ones(4, 4), torch.zeros(4, dtype=torch.long))]

        def val_dataloader(self):
            return [(torch.ones(4, 4), torch.zeros(4, dtype=torch.long)), (-torch.ones(4, 4), torch.zeros(4, dtype=torch.long))]

    import torchmetrics

    model = DataDependent()
    model.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="micro")
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export(model, Digits(), tmp_path / "out", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_bad_options_are_named(trained, tmp_path):
    model, dm = trained
    for kwargs, key in (({"quantize": "int4"}, "export.quantize"), ({"format": "tflite"}, "export.format"),
                        ({"max_accuracy_drop": -1}, "export.max_accuracy_drop"), ({"batch_sizes": [0]}, "export.batch_sizes"),
                        ({"calibration_samples": 0}, "export.calibration_samples")):
        with pytest.raises(ValueError, match=key):
            export(model, dm, tmp_path / "x", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_dynamic_on_a_conv_net_warns_with_the_measured_reason(trained, tmp_path):
    model, dm = trained
    with pytest.warns(UserWarning, match=r"int8_dynamic on a conv net \(\d+% of the weights are in Conv layers\)"):
        report = export(model, dm, tmp_path / "dyn", quantize="int8_dynamic", max_accuracy_drop=0.05, **FAST)
    warnings = report["quantization"]["warnings"]
    assert any(w.startswith("measured: ORT dynamic int8") and "x the fp32 time" in w for w in warnings)
