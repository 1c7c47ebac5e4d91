"""ONNX export: eval mode, dynamic batch, one file, parity against PyTorch, unsupported operators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlcost_pl.export.onnx_export import ParityError, export_onnx, onnx_parity, ort_session


def test_export_is_eval_mode_dynamic_batch_and_self_contained(trained, tmp_path):
    model, dm = trained
    model.train()  # the exporter must switch to eval mode (BatchNorm running stats)
    info = export_onnx(model, torch.zeros(2, 1, 8, 8), tmp_path / "m.onnx")
    assert info["external_data"] is False and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    session = ort_session(tmp_path / "m.onnx")
    dm.setup("validate")
    x, _ = next(iter(dm.val_dataloader()))
    for batch in (1, 5, len(x)):
        out = session.run(None, {"input": x[:batch].numpy()})[0]
        with torch.inference_mode():
            ref = model.eval()(x[:batch]).numpy()
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-3)
    stats = onnx_parity(model, tmp_path / "m.onnx", [x], atol=1e-4, rtol=1e-3)
    assert stats["samples"] == len(x) and stats["max_abs"] < 1e-4


class DataDependent(nn.Module):
    """Python control flow on the data: tracing bakes in one branch, so ONNX disagrees on the other."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if bool(x.sum() > 0) else -self.fc(x)


def test_parity_failure_names_the_figures(tmp_path):
    model = DataDependent()
    export_onnx(model, torch.ones(2, 4), tmp_path / "d.onnx")
    with pytest.raises(ParityError, match=r"max abs diff .* max rel diff .* tolerance atol=0.0001 rtol=0.001"):
        onnx_parity(model, tmp_path / "d.onnx", [torch.ones(2, 4), -torch.ones(2, 4)])


class Eig(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x).real


def test_unsupported_operator_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"cannot be exported to ONNX: .*eigvals"):
        export_onnx(Eig(), torch.randn(2, 3, 3), tmp_path / "e.onnx")


def test_bad_opset_is_named(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(nn.Linear(2, 2), torch.zeros(1, 2), tmp_path / "x.onnx", opset=11)
