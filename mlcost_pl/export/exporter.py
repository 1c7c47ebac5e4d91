"""``export(module, datamodule, out_dir)``: ONNX fp32 + INT8 (and bitsandbytes on request), gated on the module's
own metric, with a latency/size/cost report; ``verify(out_dir)`` re-checks an export."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlcost_pl.errors import MissingInputError, UserInputError
from mlcost_pl.export import bnb as bnb_mod
from mlcost_pl.export.gate import GateFailedError, evaluate, module_metric, run_gate
from mlcost_pl.export.onnx_export import INPUT_NAME, export_onnx, file_bytes, onnx_parity, ort_session
from mlcost_pl.export.quantize import (
    QUANTIZE_MODES,
    choose_quant_types,
    conv_share,
    layer_errors,
    quantize_dynamic,
    quantize_static,
)
from mlcost_pl.export.report import (
    check_manifest,
    latency_ms,
    render_markdown,
    sha256_file,
    usd_per_million,
    verify_command,
    write_manifest,
)
from mlcost_pl.utils.fs import replace_dir

log = logging.getLogger(__name__)

FORMATS = ("onnx", *bnb_mod.BNB_FORMATS)
FP32_ONNX, INT8_ONNX, VERIFY_SET = "model.onnx", "model.int8.onnx", "verify_set.npz"


class VerifyError(UserInputError):
    """An export folder failed re-checking (hashes, parity or gate)."""


def _batches(loader: Any, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    seen = 0
    for batch in loader:
        x, y = batch[0], batch[1]
        if limit is not None and seen >= limit:
            return
        if limit is not None and seen + len(x) > limit:
            x, y = x[: limit - seen], y[: limit - seen]
        seen += len(x)
        yield x.float(), y


def _ort_predict(session: Any):
    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])

    return predict


def _torch_predict(model: nn.Module, device: str = "cpu"):
    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x.to(device)).float().cpu()

    return predict


def _repeat_to(x: torch.Tensor, n: int) -> torch.Tensor:
    reps = -(-n // len(x))
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:n].contiguous()


def _validate(quantize: str, fmt: str, max_accuracy_drop: float, calibration_samples: int,
              batch_sizes: Sequence[int], price_per_hour: float) -> None:
    if quantize not in QUANTIZE_MODES:
        raise UserInputError(f"export.quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if fmt not in FORMATS:
        raise UserInputError(f"export.format must be one of {FORMATS}, got {fmt!r}")
    if max_accuracy_drop < 0:
        raise UserInputError(f"export.max_accuracy_drop must be >= 0, got {max_accuracy_drop}")
    if calibration_samples < 1:
        raise UserInputError(f"export.calibration_samples must be >= 1, got {calibration_samples}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise UserInputError(f"export.batch_sizes must be positive integers, got {list(batch_sizes)}")
    if price_per_hour < 0:
        raise UserInputError(f"export.price_per_hour must be >= 0, got {price_per_hour}")


def export(
    module: nn.Module,
    datamodule: Any,
    out_dir: str | Path,
    *,
    quantize: str = "int8_static",
    format: str = "onnx",  # noqa: A002 - the user-facing option name
    max_accuracy_drop: float = 0.01,
    calibration_samples: int = 256,
    parity_atol: float = 1e-4,
    parity_rtol: float = 1e-3,
    parity_samples: int = 256,
    batch_sizes: Sequence[int] = (1, 8, 32),
    latency_iters: int = 20,
    price_per_hour: float = 0.0832,
    cost_batch: int | None = None,
    device: str = "cpu",
    opset: int = 17,
    verify_samples: int = 512,
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """Export ``module`` to ONNX (+ INT8, + bitsandbytes), check it, gate it, measure it, and write a report.

    Everything is written to a temporary sibling of ``out_dir`` and moved into place at the end: a failure (bad
    parity, failed gate, an unsupported operator, Ctrl-C) leaves no ``out_dir`` behind.

    Args:
        module: the trained model (any module mapping inputs to logits, e.g. ``ImageClassifier``).
        datamodule: its DataModule; calibration uses the training split, parity and the gate the validation split.
        out_dir: the export folder (local path).
        quantize: ``"int8_static"`` (QDQ, calibrated; for conv nets), ``"int8_dynamic"`` (Linear/RNN-heavy
            models), or ``"none"``.
        format: ``"onnx"``, or ``"bnb_int8"`` / ``"bnb_nf4"`` to also write a bitsandbytes PyTorch model.
        max_accuracy_drop: largest acceptable metric drop (0.01 = one accuracy point) for every quantized variant.
        calibration_samples: training samples used to calibrate static quantization.
        parity_atol: absolute tolerance of the fp32 ONNX vs PyTorch check.
        parity_rtol: relative tolerance of that check.
        parity_samples: validation samples compared.
        batch_sizes: batch sizes at which latency is measured.
        latency_iters: timed iterations per variant and batch size (the bench measures more).
        price_per_hour: instance price in $/hour for the cost per million predictions.
        cost_batch: batch size the cost is computed at (default: the largest of ``batch_sizes``).
        device: where the bitsandbytes model runs (``"cpu"`` or ``"cuda"``); ONNX variants run on CPU.
        opset: ONNX opset.
        verify_samples: validation samples stored in ``verify_set.npz`` for :func:`verify`.
        overwrite: replace an existing ``out_dir``.
        source: extra provenance for the report (e.g. ``{"ckpt_path": ...}``).
        metric: the metric the gate uses: a torchmetrics attribute of the module (``val_acc`` or ``val/acc``) or
            ``"top1"``; ``None`` picks the first of the module's metrics that takes ``(logits, target)``, else top-1
            accuracy of the logits (see :func:`mlcost_pl.export.gate.module_metric`; the report says which).

    Returns:
        The report (also written as ``report.json`` / ``report.md``).

    Raises:
        ValueError: a bad option (named), ``out_dir`` exists without ``overwrite``, an operator ONNX cannot export.
        ParityError: fp32 ONNX outputs differ from PyTorch beyond tolerance.
        GateFailedError: a quantized variant lost more than ``max_accuracy_drop`` even with layers kept in fp32.

    Examples:
        >>> from mlcost_pl.data import DigitsDataModule
        >>> from mlcost_pl.models import ImageClassifier
        >>> model = ImageClassifier("tiny_cnn", num_classes=10, in_channels=1)  # train it first
        >>> report = export(model, DigitsDataModule(image_size=16), "exports/tiny")  # doctest: +SKIP
        >>> report["variants"]["ort_int8"]["latency_ms"]["8"]["p50"]  # doctest: +SKIP
    """
    _validate(quantize, format, max_accuracy_drop, calibration_samples, batch_sizes, price_per_hour)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UserInputError(f"output folder {out_dir} exists already; pass export.overwrite=true to replace it")
    batch_sizes = [int(b) for b in batch_sizes]
    cost_batch = int(cost_batch or max(batch_sizes))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        report = _export_into(
            module, datamodule, tmp, quantize=quantize, fmt=format, max_drop=max_accuracy_drop,
            calibration_samples=calibration_samples, atol=parity_atol, rtol=parity_rtol, parity_samples=parity_samples,
            batch_sizes=batch_sizes, latency_iters=latency_iters, price_per_hour=price_per_hour, cost_batch=cost_batch,
            device=device, opset=opset, verify_samples=verify_samples, source=source or {}, metric_choice=metric,
            final_dir=out_dir,
        )
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report["out_dir"] = str(out_dir)
    return report


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise UserInputError(f"output folder {out_dir} appeared during the export; pass export.overwrite=true")
    replace_dir(tmp, out_dir)


def _export_into(module: nn.Module, datamodule: Any, tmp: Path, *, quantize: str, fmt: str, max_drop: float,
                 calibration_samples: int, atol: float, rtol: float, parity_samples: int, batch_sizes: list[int],
                 latency_iters: int, price_per_hour: float, cost_batch: int, device: str, opset: int,
                 verify_samples: int, source: dict[str, Any], metric_choice: str | None,
                 final_dir: Path | None = None) -> dict[str, Any]:
    module = module.eval().cpu()
    for stage in ("fit", "validate"):
        datamodule.setup(stage)
    val_loader = datamodule.val_dataloader
    first_x, _ = next(_batches(val_loader(), 2))
    probe_x, probe_y = next(_batches(val_loader(), 64))
    with torch.no_grad():
        gate_metric = module_metric(module, module(probe_x), probe_y, metric_choice)
    metric_name, metric, higher = gate_metric.name, gate_metric.metric, gate_metric.higher_is_better
    log.info("export: gating on %s: %s", metric_name, gate_metric.source)

    # 1. fp32 ONNX + parity on real validation batches
    onnx_info = export_onnx(module, first_x, tmp / FP32_ONNX, opset=opset)
    parity = onnx_parity(module, tmp / FP32_ONNX, (x for x, _ in _batches(val_loader(), parity_samples)), atol, rtol)
    fp32_sess = ort_session(tmp / FP32_ONNX)
    metrics = {
        "torch_fp32": evaluate(_torch_predict(module), _batches(val_loader()), metric),
        "ort_fp32": evaluate(_ort_predict(fp32_sess), _batches(val_loader()), metric),
    }
    variants: dict[str, dict[str, Any]] = {
        "torch_fp32": {"file": None, "bytes": None, "runner": _torch_predict(module)},
        "ort_fp32": {"file": FP32_ONNX, "bytes": file_bytes(tmp / FP32_ONNX), "runner": _ort_predict(fp32_sess)},
    }
    report: dict[str, Any] = {"gate": None, "quantization": None,
                              "metric": {"name": metric_name, "source": gate_metric.source}}

    # 2. INT8 with ONNX Runtime, gated
    if quantize != "none":
        choice = choose_quant_types()
        qinfo: dict[str, Any] = {"mode": quantize, **choice.as_dict(), "warnings": []}
        share = conv_share(tmp / FP32_ONNX)
        if quantize == "int8_static":
            torch.manual_seed(0)
            calib = [x.numpy() for x, _ in _batches(datamodule.train_dataloader(), calibration_samples)]
            qinfo["calibration_samples"] = int(sum(len(c) for c in calib))

            def build(keep: list[str]) -> None:
                quantize_static(tmp / FP32_ONNX, tmp / INT8_ONNX, calib, choice, exclude=keep)
        else:
            qinfo["reason"] = choice.reason + "; weights only, activations quantized at run time"
            if share > 0.5:
                msg = (f"export.quantize=int8_dynamic on a conv net ({share:.0%} of the weights are in Conv layers): "
                       "onnxruntime runs dynamically quantized convs as ConvInteger plus per-call activation "
                       "quantization, which is slower than fp32; use export.quantize=int8_static")
                warnings.warn(msg, stacklevel=3)
                qinfo["warnings"].append(msg)

            def build(keep: list[str]) -> None:
                quantize_dynamic(tmp / FP32_ONNX, tmp / INT8_ONNX, choice, exclude=keep)

        probe = first_x.numpy()

        def evaluate_keeping(keep: list[str]) -> float:
            build(keep)
            return evaluate(_ort_predict(ort_session(tmp / INT8_ONNX)), _batches(val_loader()), metric)

        gate = run_gate(metric_name, metrics["ort_fp32"], evaluate_keeping,
                        lambda: layer_errors(tmp / FP32_ONNX, tmp / INT8_ONNX, probe), max_drop, higher)
        if not gate.passed:
            raise GateFailedError(gate)
        metrics["ort_int8"] = gate.quantized
        int8_sess = ort_session(tmp / INT8_ONNX)
        variants["ort_int8"] = {"file": INT8_ONNX, "bytes": file_bytes(tmp / INT8_ONNX), "runner": _ort_predict(int8_sess)}
        report["gate"] = gate.as_dict()
        report["quantization"] = qinfo

    # 3. bitsandbytes PyTorch model, gated the same way
    if fmt in bnb_mod.BNB_FORMATS:
        bnb_metric: dict[str, Any] = {}

        def bnb_keeping(keep: list[str]) -> float:
            bnb_metric["model"] = bnb_mod.to_bnb(module, fmt, device, keep_fp32=keep)
            return evaluate(_torch_predict(bnb_metric["model"], device), _batches(val_loader()), metric)

        gate_b = run_gate(metric_name, metrics["torch_fp32"], bnb_keeping,
                          lambda: bnb_mod.linear_errors(module, fmt, first_x), max_drop, higher)
        if not gate_b.passed:
            raise GateFailedError(gate_b)
        name = f"model.{fmt}.pt"
        bnb_mod.save_bnb(bnb_metric["model"], str(tmp / name))
        metrics[fmt] = gate_b.quantized
        variants[fmt] = {"file": name, "bytes": (tmp / name).stat().st_size,
                         "runner": _torch_predict(bnb_metric["model"], device)}
        report["gate_bnb"] = gate_b.as_dict()
        report["gate"] = report["gate"] or gate_b.as_dict()

    # 4. latency and cost per variant
    sample = torch.cat([x for x, _ in _batches(val_loader(), max(batch_sizes))])
    for name, v in variants.items():
        v["metric"] = metrics[name]
        v["latency_ms"] = {}
        for b in batch_sizes:
            xb = _repeat_to(sample, b)
            runner = v["runner"]
            v["latency_ms"][str(b)] = latency_ms(lambda r=runner, xb=xb: r(xb), iters=latency_iters)
        v["usd_per_million"] = usd_per_million(v["latency_ms"][str(cost_batch)]["p50"], cost_batch, price_per_hour)
    if quantize == "int8_dynamic" and report["quantization"] and conv_share(tmp / FP32_ONNX) > 0.5:
        b = 8 if 8 in batch_sizes else batch_sizes[0]
        q, f = variants["ort_int8"]["latency_ms"][str(b)]["p50"], variants["ort_fp32"]["latency_ms"][str(b)]["p50"]
        report["quantization"]["warnings"].append(
            f"measured: ORT dynamic int8 {q:.2f} ms vs ORT fp32 {f:.2f} ms at batch {b} ({q / f:.2f}x the fp32 time)")
        log.warning(report["quantization"]["warnings"][-1])

    # 5. verification set: stored inputs, labels, PyTorch logits, and the figures verify() must reproduce
    xs, ys = zip(*_batches(val_loader(), verify_samples))
    vx, vy = torch.cat(xs), torch.cat(ys)
    ref = _torch_predict(module)(vx)
    np.savez_compressed(tmp / VERIFY_SET, x=vx.numpy(), y=vy.numpy(), torch_logits=ref.numpy())
    subset = {"samples": len(vy), "ort_fp32_top1": _top1(fp32_sess, vx, vy)}
    if "ort_int8" in variants:
        subset["ort_int8_top1"] = _top1(ort_session(tmp / INT8_ONNX), vx, vy)

    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir()) if p.is_file()}
    report.update({
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "cpu": choose_quant_types().cpu,
        "onnx": onnx_info,
        "parity": parity,
        "verify_subset": subset,
        "max_accuracy_drop": max_drop,
        "format": fmt,
        "metrics": metrics,
        "variants": {n: {k: val for k, val in v.items() if k != "runner"} for n, v in variants.items()},
        "cost": {"price_per_hour": price_per_hour, "batch": cost_batch},
        "ratios": _ratios(variants, batch_sizes),
        "files": files,
    })
    if final_dir is not None:
        report["verify_command"] = verify_command(final_dir)
    (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (tmp / "report.md").write_text(render_markdown(report, batch_sizes))
    write_manifest(tmp)
    return report


def _top1(session: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = session.run(None, {INPUT_NAME: x.numpy()})[0]
    return float((logits.argmax(1) == y.numpy()).mean())


def _ratios(variants: dict[str, dict[str, Any]], batch_sizes: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = variants["torch_fp32"]["latency_ms"]
    for name, v in variants.items():
        if name == "torch_fp32":
            continue
        out[name] = {f"speedup_vs_torch_fp32@{b}": base[str(b)]["p50"] / v["latency_ms"][str(b)]["p50"] for b in batch_sizes}
        if v.get("bytes"):
            out[name]["size_ratio_vs_ort_fp32"] = variants["ort_fp32"]["bytes"] / v["bytes"]
    return out


def verify(out_dir: str | Path) -> dict[str, Any]:
    """Re-check an export folder: file hashes against ``manifest.json``, fp32 parity on the stored validation
    samples, and the accuracy gate (top-1 on those samples must match the export-time figures and stay within
    ``max_accuracy_drop``).

    Returns:
        ``{"ok": True, "files": n, "parity_max_abs": ..., "int8_drop": ...}``.

    Raises:
        FileNotFoundError: ``out_dir`` or its report is missing.
        VerifyError: any check fails; the message lists every problem.

    Examples:
        >>> verify("exports/tiny")["ok"]  # doctest: +SKIP
        True
    """
    folder = Path(out_dir)
    if not (folder / "report.json").is_file():
        raise MissingInputError(f"verify={out_dir}: no export here (report.json missing)")
    problems = check_manifest(folder)
    if problems:
        raise VerifyError(f"verify={out_dir}: " + "; ".join(problems))
    report = json.loads((folder / "report.json").read_text())
    data = np.load(folder / VERIFY_SET)
    x, y, ref = torch.from_numpy(data["x"]), torch.from_numpy(data["y"]), data["torch_logits"]
    p = report["parity"]
    out = ort_session(folder / FP32_ONNX).run(None, {INPUT_NAME: x.numpy()})[0]
    diff = np.abs(out - ref)
    bad = int((diff > p["atol"] + p["rtol"] * np.abs(ref)).sum())
    if bad:
        problems.append(f"parity: {bad} values differ beyond atol={p['atol']} rtol={p['rtol']} (max abs {diff.max():.3g})")
    summary: dict[str, Any] = {"files": len(json.loads((folder / 'manifest.json').read_text())),
                               "parity_max_abs": float(diff.max())}
    subset = report["verify_subset"]
    fp32 = _top1(ort_session(folder / FP32_ONNX), x, y)
    tol = 1.0 / max(1, subset["samples"])  # one sample either way: kernels may differ across CPUs
    if abs(fp32 - subset["ort_fp32_top1"]) > tol:
        problems.append(f"gate: ORT fp32 top-1 {fp32:.4f} != {subset['ort_fp32_top1']:.4f} at export")
    if (folder / INT8_ONNX).exists():
        int8 = _top1(ort_session(folder / INT8_ONNX), x, y)
        summary["int8_drop"] = fp32 - int8
        if abs(int8 - subset["ort_int8_top1"]) > tol:
            problems.append(f"gate: ORT int8 top-1 {int8:.4f} != {subset['ort_int8_top1']:.4f} at export")
        if fp32 - int8 > report["max_accuracy_drop"] + tol:
            problems.append(f"gate: int8 drop {fp32 - int8:.4f} > max_accuracy_drop {report['max_accuracy_drop']}")
    if problems:
        raise VerifyError(f"verify={out_dir}: " + "; ".join(problems))
    return {"ok": True, **summary}
