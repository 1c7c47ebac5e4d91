"""PyTorch -> ONNX in eval mode with a dynamic batch axis, one self-contained file, and an fp32 parity check."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlcost_pl.errors import UserInputError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# protobuf cannot hold more than 2 GiB: above this, weights go to one `<name>.data` file next to the model.
_EXTERNAL_DATA_BYTES = 1_800_000_000


class ParityError(ValueError):
    """ONNX Runtime's fp32 outputs differ from PyTorch's by more than the tolerance."""


def param_bytes(model: nn.Module) -> int:
    """Bytes held by the parameters and buffers of ``model``."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def export_onnx(model: nn.Module, sample: torch.Tensor, path: str | Path, opset: int = 17) -> dict[str, Any]:
    """Export ``model`` (put in eval mode, on CPU) to ``path`` with a dynamic batch axis.

    The file is self-contained unless the weights exceed protobuf's 2 GiB limit, in which case they go to one
    ``<file>.data`` next to it. Uses the TorchScript exporter (fast, and its graphs fuse well in ONNX Runtime); falls
    back to the dynamo exporter when the TorchScript one cannot trace the model.

    Returns:
        ``{"path", "opset", "exporter", "external_data", "input_shape"}``.

    Raises:
        ValueError: an operator the exporter cannot handle (names it), or a bad ``opset``.

    Example:
        >>> from mlcost_pl.models import TinyCNN
        >>> info = export_onnx(TinyCNN(10, 1), torch.zeros(2, 1, 8, 8), "/tmp/tiny.onnx")  # doctest: +SKIP
    """
    if opset < 13:
        raise UserInputError(f"opset must be >= 13 (per-channel QDQ needs it), got {opset}")
    path = Path(path)
    model = model.eval().cpu()
    sample = sample.detach().cpu().float()
    external = param_bytes(model) > _EXTERNAL_DATA_BYTES
    errors: list[str] = []
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
            )
            exporter = "torchscript"
        except Exception as err:  # noqa: BLE001 - try the other exporter, then report both
            errors.append(f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")
            try:
                torch.onnx.export(
                    model,
                    (sample,),
                    str(path),
                    dynamo=True,
                    external_data=external,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                    opset_version=max(opset, 18),
                )
                exporter = "dynamo"
            except Exception as err2:  # noqa: BLE001
                errors.append(f"{type(err2).__name__}: {' '.join(str(err2).split())[:300]}")
                raise ValueError(f"model cannot be exported to ONNX: {errors[0]}") from err2
    if external and exporter == "torchscript":
        import onnx

        proto = onnx.load(str(path))
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
    has_data = (path.parent / (path.name + ".data")).exists()
    return {
        "path": path.name,
        "opset": opset,
        "exporter": exporter,
        "external_data": has_data,
        "input_shape": ["batch", *sample.shape[1:]],
    }


def ort_session(path: str | Path | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (a file, or model bytes) with all graph optimizations and torch's thread count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts, providers=["CPUExecutionProvider"])


def onnx_parity(
    model: nn.Module,
    onnx_path: str | Path,
    batches: Iterable[torch.Tensor],
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> dict[str, float]:
    """Compare PyTorch fp32 and ONNX Runtime fp32 outputs on real batches.

    An element fails when ``|ort - torch| > atol + rtol * |torch|`` (``numpy.allclose``'s rule).

    Returns:
        ``{"max_abs", "max_rel", "mean_abs", "samples", "atol", "rtol"}``; ``max_rel`` is ``max |d| / (|torch| + 1e-6)``.

    Raises:
        ParityError: any element fails; the message gives the worst absolute and relative differences.
    """
    if atol < 0 or rtol < 0:
        raise UserInputError(f"parity tolerances must be >= 0, got atol={atol} rtol={rtol}")
    session = ort_session(onnx_path)
    model = model.eval().cpu()
    max_abs = max_rel = total_abs = 0.0
    count = samples = failing = 0
    worst_excess = -np.inf
    for x in batches:
        with torch.inference_mode():
            ref = model(x.float()).numpy()
        out = session.run(None, {INPUT_NAME: x.float().numpy()})[0]
        diff = np.abs(out - ref)
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / (np.abs(ref) + 1e-6)).max()))
        total_abs += float(diff.sum())
        count += diff.size
        samples += len(x)
        excess = diff - (atol + rtol * np.abs(ref))
        failing += int((excess > 0).sum())
        worst_excess = max(worst_excess, float(excess.max()))
    if samples == 0:
        raise UserInputError("parity check got no batches: the validation split is empty")
    stats = {
        "max_abs": max_abs,
        "max_rel": max_rel,
        "mean_abs": total_abs / count,
        "samples": samples,
        "atol": atol,
        "rtol": rtol,
        "failing_elements": failing,
    }
    if failing:
        raise ParityError(
            f"ONNX fp32 output differs from PyTorch on {failing} of {count} values over {samples} validation samples: "
            f"max abs diff {max_abs:.3g}, max rel diff {max_rel:.3g} > tolerance atol={atol:g} rtol={rtol:g} "
            "(export.parity_atol / export.parity_rtol); the exported graph does not compute what the model does"
        )
    return stats


def onnx_files(path: str | Path) -> list[Path]:
    """The model file and its external data file, if any."""
    path = Path(path)
    data = path.parent / (path.name + ".data")
    return [path, data] if data.exists() else [path]


def file_bytes(path: str | Path) -> int:
    """Size of an ONNX model including its external data."""
    return sum(os.path.getsize(p) for p in onnx_files(path))
