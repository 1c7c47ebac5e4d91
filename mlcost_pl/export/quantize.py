"""ONNX Runtime INT8 quantization: static QDQ with types chosen for this CPU, dynamic, and per-layer error."""

from __future__ import annotations

import contextlib
import logging
import platform
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcost_pl.errors import UserInputError
from mlcost_pl.export.onnx_export import INPUT_NAME, ort_session
from mlcost_pl.utils.cpu import cpu_info, parse_cpuinfo

QUANTIZE_MODES = ("int8_static", "int8_dynamic", "none")
# Ops whose weights are quantized and whose error is ranked by the gate.
_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class QuantChoice:
    """Activation/weight types for this CPU and why (goes into the report)."""

    activation_type: str
    weight_type: str
    per_channel: bool
    reduce_range: bool
    cpu: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_features(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's integer dot-product features, from ``/proc/cpuinfo`` flags (``cpuinfo`` text for tests).

    Example:
        >>> cpu_features("flags : fpu avx2 avx512_vnni")["vnni"]
        True
    """
    flags = cpu_info().flags if cpuinfo is None else parse_cpuinfo(cpuinfo).flags
    found = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
    return {
        "machine": platform.machine(),
        "flags": found,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}),
        "x86": platform.machine().lower() in ("x86_64", "amd64", "i686") or "avx2" in flags,
    }


def choose_quant_types(features: dict[str, Any] | None = None) -> QuantChoice:
    """Pick activation/weight int8 types for ONNX Runtime on this CPU.

    * x86 with VNNI (AVX512-VNNI, AVX-VNNI, AMX): uint8 activations, int8 per-channel weights, full range; VNNI's
      ``vpdpbusd`` accumulates u8*s8 products in int32 without saturation, so this is the fast and exact path.
    * x86 without VNNI (AVX2 only): the same u8/s8 kernels, but they use ``vpmaddubsw``, which adds pairs of
      u8*s8 products into int16 and can saturate; ONNX Runtime's quantization docs recommend ``reduce_range``
      (7-bit weights) there, which rules saturation out for about half a bit of weight precision.
    * Other CPUs (ARM): int8/int8 (ONNX Runtime's QDQ default, which its ARM kernels favour).

    Example:
        >>> choose_quant_types({"x86": True, "vnni": False, "flags": ["avx2"]}).reduce_range
        True
    """
    feats = features if features is not None else cpu_features()
    if feats.get("x86") and feats.get("vnni"):
        return QuantChoice("uint8", "int8", True, False, feats,
                           "x86 with VNNI: u8 activations x s8 per-channel weights run on vpdpbusd (int32 accumulate, "
                           "no saturation), so full 8-bit range")
    if feats.get("x86"):
        return QuantChoice("uint8", "int8", True, True, feats,
                           "x86 without VNNI (AVX2): u8 x s8 kernels use vpmaddubsw, whose int16 pair sums can "
                           "saturate; reduce_range (7-bit weights) avoids that, as onnxruntime's quantization docs advise")
    return QuantChoice("int8", "int8", True, False, feats, "non-x86 CPU: s8/s8 QDQ, onnxruntime's default for ARM")


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


class _Reader:
    """Feeds calibration batches to onnxruntime's calibrator."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._it = iter([{INPUT_NAME: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # not needed by the MinMax calibrator
        pass


def weight_nodes(onnx_path: str | Path) -> list[dict[str, Any]]:
    """Nodes with quantizable weights, in graph order: ``{"name", "op", "params", "output"}``."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in _WEIGHT_OPS:
            params = sum(sizes.get(i, 0) for i in node.input[1:])
            out.append({"name": node.name, "op": node.op_type, "params": params, "output": node.output[0]})
    return out


def conv_share(onnx_path: str | Path) -> float:
    """Share of quantizable weights held by Conv layers (1.0 for a pure conv net)."""
    nodes = weight_nodes(onnx_path)
    total = sum(n["params"] for n in nodes)
    conv = sum(n["params"] for n in nodes if n["op"].startswith("Conv"))
    return conv / total if total else 0.0


# ONNX Runtime's quantizer logs advice a user of the export recipe cannot act on, through the root logger: the graph
# is already shape-inferred and optimized by our ONNX export ("pre-processing"), and a Conv/Gemm bias that is not an
# initializer after folding is expected. Everything else it logs is kept.
_ORT_NOISE = ("Please consider to run pre-processing", "Please consider pre-processing", "Expected bias")


class _DropOrtNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_ORT_NOISE)


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    quiet = _DropOrtNoise()
    root = logging.getLogger()
    handlers = list(root.handlers)
    root.addFilter(quiet)
    for handler in handlers:  # logging.warning() on the root logger is filtered by its handlers too
        handler.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(quiet)
        for handler in handlers:
            handler.removeFilter(quiet)


def quantize_static(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[np.ndarray],
    choice: QuantChoice,
    exclude: Sequence[str] = (),
) -> None:
    """Static QDQ quantization calibrated (min/max) on ``calibration`` batches; ``exclude`` node names stay fp32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    if not calibration:
        raise UserInputError("export.calibration_samples: no calibration batches (the training split is empty?)")
    with _quiet_ort():
        ort_quantize_static(
            str(fp32_path),
            str(out_path),
            _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=choice.per_channel,
            reduce_range=choice.reduce_range,
            activation_type=_quant_type(choice.activation_type),
            weight_type=_quant_type(choice.weight_type),
            nodes_to_exclude=list(exclude),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )


def quantize_dynamic(fp32_path: str | Path, out_path: str | Path, choice: QuantChoice, exclude: Sequence[str] = ()) -> None:
    """Dynamic quantization (int8 weights, activations quantized at run time): for Linear/RNN-heavy models."""
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    with _quiet_ort():
        ort_quantize_dynamic(
            str(fp32_path),
            str(out_path),
            per_channel=choice.per_channel,
            reduce_range=choice.reduce_range,
            weight_type=_quant_type(choice.weight_type),
            nodes_to_exclude=list(exclude),
        )


def _with_outputs(model: Any, names: Sequence[str]) -> bytes:
    import onnx

    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


def _rel(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(np.linalg.norm(ref - got) / (np.linalg.norm(ref) + 1e-12))


def layer_errors(fp32_path: str | Path, int8_path: str | Path, batch: np.ndarray) -> list[dict[str, Any]]:
    """Rank weight layers (Conv/Gemm/MatMul) by the quantization error at their own boundaries, worst first.

    Measured inside the quantized (QDQ) model on ``batch``: for each layer, the relative L2 error
    ``|t - DQ(Q(t))| / |t|`` of its data input, its output, and its weight (against the fp32 weight). The largest
    of the three is the layer's error: what quantizing this layer loses, independent of upstream layers. Clipping
    from a bad calibration range shows up here directly.

    Returns:
        ``[{"name", "op", "error", "input_error", "weight_error", "output_error"}]`` sorted by ``error``, descending.
    """
    import onnx
    from onnx import numpy_helper

    fp32 = onnx.load(str(fp32_path))
    qdq = onnx.load(str(int8_path))
    fp32_inits = {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in qdq.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    qinits = {i.name for i in qdq.graph.initializer}
    fp32_producer = {o: n.op_type for n in fp32.graph.node for o in n.output}
    fp32_consumers: dict[str, list[str]] = {}
    for n in fp32.graph.node:
        for i in n.input:
            fp32_consumers.setdefault(i, []).append(n.op_type)

    pairs: dict[str, dict[str, tuple[str, Any]]] = {}  # node -> kind -> (dq tensor, float tensor name or array)
    for node in qdq.graph.node:
        if node.op_type not in _WEIGHT_OPS:
            continue
        entry: dict[str, tuple[str, Any]] = {}
        for idx, name in enumerate(node.input[:2]):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in qinits:  # a quantized weight: compare with the fp32 initializer
                ref_node = fp32_nodes.get(node.name)
                if ref_node is not None and idx < len(ref_node.input) and ref_node.input[idx] in fp32_inits:
                    entry["weight_error"] = (name, fp32_inits[ref_node.input[idx]])
            else:
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    entry["input_error"] = (name, q.input[0])
        for q in consumers.get(node.output[0], []):
            if q.op_type == "QuantizeLinear":
                dqs = [d for d in consumers.get(q.output[0], []) if d.op_type == "DequantizeLinear"]
                if dqs:
                    # ONNX Runtime folds a following Relu into the output's quantization range: compare with relu(t).
                    # (it also renames the Conv output to the Relu's output name)
                    relu = fp32_producer.get(node.output[0]) == "Relu" or fp32_consumers.get(node.output[0]) == ["Relu"]
                    entry["output_error"] = (dqs[0].output[0], ("relu", node.output[0]) if relu else node.output[0])
                    break
        pairs[node.name] = entry

    def ref_name(ref: Any) -> Any:
        return ref[1] if isinstance(ref, tuple) else ref

    wanted = sorted({t for e in pairs.values() for dq, ref in e.values() for t in (dq, ref_name(ref)) if isinstance(t, str)})
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # measure the QDQ simulation itself
    opts.log_severity_level = 3
    session = ort.InferenceSession(_with_outputs(qdq, wanted), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, {INPUT_NAME: batch})))

    rows = []
    for node in fp32.graph.node:
        if node.op_type not in _WEIGHT_OPS:
            continue
        row: dict[str, Any] = {"name": node.name, "op": node.op_type}
        for kind, (dq, ref) in pairs.get(node.name, {}).items():
            if isinstance(ref, tuple):
                ref_val = np.maximum(values[ref[1]], 0.0)
            else:
                ref_val = values[ref] if isinstance(ref, str) else ref
            row[kind] = _rel(ref_val, values[dq])
        row["error"] = max([v for k, v in row.items() if k.endswith("_error")], default=0.0)
        rows.append(row)
    return sorted(rows, key=lambda r: r["error"], reverse=True)
