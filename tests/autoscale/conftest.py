"""A tiny real export for the autoscale tests: an ONNX linear classifier over 8x8 digits-shaped inputs, built with
onnx.helper (no torch import), with a manifest and a verify set like recipes.export writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_tiny_export(folder: Path, seed: int = 0) -> Path:
    """``model.onnx`` (Flatten -> MatMul -> Add, 1x8x8 -> 10), ``verify_set.npz`` and ``manifest.json`` in ``folder``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mlcost_pl.export.report import write_manifest

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["mm"]),
         helper.make_node("Add", ["mm", "b"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    np.savez_compressed(folder / "verify_set.npz", x=rng.random((32, 1, 8, 8), dtype=np.float32), y=np.zeros(32, np.int64))
    write_manifest(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """A real export folder the real ``recipes.serve`` serves."""
    return write_tiny_export(tmp_path_factory.mktemp("export") / "model")
