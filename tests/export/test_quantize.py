"""CPU feature detection, type choice, and per-layer quantization error."""

from __future__ import annotations

import numpy as np
import torch

from mlcost_pl.export.onnx_export import export_onnx, ort_session
from mlcost_pl.export.quantize import choose_quant_types, conv_share, cpu_features, layer_errors, quantize_static


def test_cpu_features_parse_flags():
    assert cpu_features("flags\t\t: fpu sse avx2 avx512f avx512_vnni\n") | {"machine": ""} == {
        "machine": "", "flags": ["avx2", "avx512_vnni", "avx512f"], "vnni": True, "x86": True}
    assert cpu_features("flags : avx2 avx_vnni")["vnni"] is True
    assert cpu_features("flags : avx2")["vnni"] is False


def test_type_choice_follows_the_cpu():
    vnni = choose_quant_types({"x86": True, "vnni": True, "flags": ["avx512_vnni"]})
    avx2 = choose_quant_types({"x86": True, "vnni": False, "flags": ["avx2"]})
    arm = choose_quant_types({"x86": False, "vnni": False, "flags": ["asimddp"]})
    assert (vnni.activation_type, vnni.weight_type, vnni.reduce_range) == ("uint8", "int8", False)
    assert (avx2.activation_type, avx2.weight_type, avx2.reduce_range) == ("uint8", "int8", True)
    assert "vpmaddubsw" in avx2.reason and "reduce_range" in avx2.reason
    assert (arm.activation_type, arm.weight_type) == ("int8", "int8")
    assert all(c.per_channel for c in (vnni, avx2, arm))
    here = choose_quant_types()
    assert here.cpu["vnni"] == bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(here.cpu["flags"]))


def test_static_qdq_and_layer_error_ranking(trained, tmp_path):
    model, dm = trained
    export_onnx(model, torch.zeros(2, 1, 8, 8), tmp_path / "m.onnx")
    assert conv_share(tmp_path / "m.onnx") > 0.9
    dm.setup("fit")
    good = [x.numpy() for x, _ in list(dm.train_dataloader())[:2]]
    x = next(iter(dm.val_dataloader()))[0].numpy()
    quantize_static(tmp_path / "m.onnx", tmp_path / "q.onnx", good, choose_quant_types())
    ops = [n.op_type for n in __import__("onnx").load(str(tmp_path / "q.onnx")).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    ref = ort_session(tmp_path / "m.onnx").run(None, {"input": x})[0]
    out = ort_session(tmp_path / "q.onnx").run(None, {"input": x})[0]
    assert (ref.argmax(1) == out.argmax(1)).mean() > 0.9
    good_rows = layer_errors(tmp_path / "m.onnx", tmp_path / "q.onnx", x)
    assert {r["name"] for r in good_rows} == {"/backbone/features/features.0/Conv", "/backbone/features/features.4/Conv", "/head/Gemm"}
    # A calibration set at 30% of the real scale clips the activations: the error shows up, and ranks first.
    bad = [g * 0.3 for g in good]
    quantize_static(tmp_path / "m.onnx", tmp_path / "bad.onnx", bad, choose_quant_types())
    bad_rows = layer_errors(tmp_path / "m.onnx", tmp_path / "bad.onnx", x)
    assert bad_rows[0]["error"] > 5 * max(r["error"] for r in good_rows)
    assert bad_rows == sorted(bad_rows, key=lambda r: -r["error"])
    assert np.isfinite([r["error"] for r in bad_rows]).all()
