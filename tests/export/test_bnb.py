"""bitsandbytes export on CPU: Linear layers replaced, accuracy kept, unsupported shapes named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlcost_pl.export import export
from mlcost_pl.export.bnb import linear_errors, load_bnb, save_bnb, to_bnb
from tests.helpers.runif import RunIf


@pytest.mark.parametrize("fmt", ["bnb_int8", "bnb_nf4"])
def test_linear_layers_become_bitsandbytes_on_cpu(fmt, tmp_path):
    import bitsandbytes as bnb

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    q = to_bnb(net, fmt)
    kind = bnb.nn.Linear8bitLt if fmt == "bnb_int8" else bnb.nn.Linear4bit
    assert isinstance(q[0], kind) and isinstance(q[2], kind) and type(net[0]) is nn.Linear
    x = torch.randn(16, 64)
    with torch.inference_mode():
        ref, out = net(x), q(x)
    assert (out - ref).norm() / ref.norm() < (0.05 if fmt == "bnb_int8" else 0.2)
    save_bnb(q, str(tmp_path / "m.pt"))
    with torch.inference_mode():
        loaded = load_bnb(str(tmp_path / "m.pt"))(x)
    assert (loaded - out).norm() / out.norm() < 0.02  # int8 matmul kernels may round differently after reload
    kept = to_bnb(net, fmt, keep_fp32=["2"])
    assert isinstance(kept[0], kind) and type(kept[2]) is nn.Linear
    assert [r["name"] for r in linear_errors(net, fmt, x)] and all(r["error"] >= 0 for r in linear_errors(net, fmt, x))


def test_unsupported_shapes_and_models_are_named():
    with pytest.raises(ValueError, match=r"layer '1' has weight shape \(4, 0\)"):
        to_bnb(nn.Sequential(nn.Linear(8, 4), nn.Linear(0, 4)), "bnb_int8")
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        to_bnb(nn.Sequential(nn.Conv2d(1, 2, 3)), "bnb_nf4")
    with pytest.raises(ValueError, match="export.format"):
        to_bnb(nn.Linear(2, 2), "bnb_int2")


def test_export_with_bnb_reports_it(trained, tmp_path):
    model, dm = trained
    report = export(model, dm, tmp_path / "out", quantize="none", format="bnb_int8", latency_iters=2, batch_sizes=(1,))
    assert (tmp_path / "out" / "model.bnb_int8.pt").exists()
    assert report["gate_bnb"]["passed"] and report["metrics"]["bnb_int8"] >= report["metrics"]["torch_fp32"] - 0.01
    assert "bnb_int8" in report["variants"] and "bnb_int8" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.gpu
@RunIf(cuda=True)
@pytest.mark.parametrize("fmt", ["bnb_int8", "bnb_nf4"])
def test_bnb_on_cuda(fmt):
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    q = to_bnb(net, fmt, device="cuda")
    x = torch.randn(16, 64)
    with torch.inference_mode():
        out = q(x.cuda().half() if fmt == "bnb_int8" else x.cuda()).float().cpu()
    assert (out - net(x)).norm() / net(x).norm() < 0.2
