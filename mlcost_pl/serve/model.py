"""What the server runs: an export folder checked against its manifest, its variant chosen by timing on this host,
and a picklable predictor (ONNX Runtime, no torch) that the LitServe worker process loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcost_pl.errors import MissingInputError, UserInputError
from mlcost_pl.export.report import MANIFEST, check_manifest

log = logging.getLogger(__name__)

VARIANTS = ("auto", "int8", "fp32")
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
LABELS_FILE = "labels.json"


class OnnxPredictor:
    """``logits = predictor(batch)`` with ONNX Runtime on CPU; the session is created on first use, in the process
    that runs it (so the object pickles to LitServe's spawned worker as a path).

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime intra-op threads (``serve.threads``).
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path, self.threads = str(path), int(threads)
        self._session: Any = None
        self._input: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "threads": self.threads, "_session": None, "_input": None}

    def load(self) -> OnnxPredictor:
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
        return self

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The input shape without the batch dimension."""
        shape = self.load()._session.get_inputs()[0].shape[1:]
        if not all(isinstance(d, int) for d in shape):
            raise UserInputError(f"{self.path}: only the batch dimension may be dynamic, input shape is {shape}")
        return tuple(shape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.load()._session.run(None, {self._input: x})[0]


@dataclass
class ServedModel:
    """The model a server runs, with what the API needs to describe it.

    Attributes:
        predictor: picklable ``batch -> logits`` callable with a ``load()`` method.
        version: the model version in cache keys (SHA-256 of the export manifest).
        sample_shape: one sample's shape.
        labels: class names, or ``None`` (indices are used).
        variant: ``fp32``, ``int8`` or ``custom``.
        reason: why this variant serves.
        timings_ms: ``{variant: {batch: p50 ms}}`` measured at start-up.
        folder: the export folder, if any.
    """

    predictor: Any
    version: str
    sample_shape: tuple[int, ...]
    labels: list[str] | None = None
    variant: str = "fp32"
    reason: str = ""
    timings_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    folder: str | None = None


def _p50_ms(predictor: OnnxPredictor, x: np.ndarray, iters: int) -> float:
    predictor(x)  # warm-up
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        predictor(x)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def _labels(folder: Path, labels: Sequence[str] | None) -> list[str] | None:
    if labels:
        return [str(v) for v in labels]
    path = folder / LABELS_FILE
    if path.is_file():
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise UserInputError(f"{path}: expected a JSON list of class names")
        return [str(v) for v in data]
    return None


def load_export(model_dir: str | Path, variant: str = "auto", threads: int = 1, labels: Sequence[str] | None = None,
                timing_batches: Sequence[int] = (1, 8), timing_iters: int = 10) -> ServedModel:
    """Check ``model_dir`` against its manifest, pick the variant, and describe it.

    ``variant="auto"`` times every variant that passed the export's accuracy gate on this host (a few warm-up
    batches at each of ``timing_batches``) and serves the one with the lower total time; ``int8``/``fp32`` force one.

    Raises:
        FileNotFoundError: ``model_dir`` is not an export folder (named).
        ValueError: a file differs from the manifest, is missing or unlisted (the file named); a bad ``variant``.
    """
    if variant not in VARIANTS:
        raise UserInputError(f"serve.variant must be one of {VARIANTS}, got {variant!r}")
    folder = Path(model_dir)
    if not folder.is_dir():
        raise MissingInputError(f"model_dir={model_dir}: no such folder (give the folder recipes.export wrote)")
    if not (folder / MANIFEST).is_file():
        raise MissingInputError(f"model_dir={model_dir}: no {MANIFEST} here; not an export folder from recipes.export")
    problems = check_manifest(folder)
    if problems:
        raise UserInputError(f"model_dir={model_dir}: refusing a tampered or partial export: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    version = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()[:16]
    report = json.loads((folder / "report.json").read_text()) if (folder / "report.json").is_file() else {}
    gate_ok = bool((report.get("gate") or {}).get("passed", True))
    available = {v: folder / f for v, f in VARIANT_FILES.items() if (folder / f).is_file()}
    if "int8" in available and not gate_ok:
        available.pop("int8")
    if not available:
        raise MissingInputError(f"model_dir={model_dir}: no model.onnx or model.int8.onnx in the export")
    if variant != "auto":
        if variant not in available:
            raise UserInputError(f"serve.variant={variant}: this export has no {VARIANT_FILES[variant]} "
                             f"(available: {', '.join(sorted(available))})")
        chosen, reason, timings = variant, f"serve.variant={variant}", {}
    else:
        timings = {}
        predictors = {v: OnnxPredictor(p, threads) for v, p in available.items()}
        shape = next(iter(predictors.values())).sample_shape
        rng = np.random.default_rng(0)
        for v, pred in predictors.items():
            timings[v] = {b: _p50_ms(pred, rng.random((b, *shape), dtype=np.float32), timing_iters)
                          for b in timing_batches}
        totals = {v: sum(t.values()) for v, t in timings.items()}
        chosen = min(totals, key=totals.get)
        figures = ", ".join(f"{v} " + "/".join(f"{t[b]:.2f}" for b in timing_batches) + " ms" for v, t in timings.items())
        batches = "/".join(str(b) for b in timing_batches)
        if len(totals) == 1:
            reason = f"only {chosen} passed the export's gate"
        else:
            other = next(v for v in totals if v != chosen)
            reason = (f"{chosen} is {totals[other] / totals[chosen]:.2f}x faster than {other} on this host "
                      f"(p50 at batch {batches}: {figures})")
    predictor = OnnxPredictor(available[chosen], threads)
    return ServedModel(predictor=predictor, version=version, sample_shape=predictor.sample_shape,
                       labels=_labels(folder, labels), variant=chosen, reason=reason, timings_ms=timings,
                       folder=str(folder))


def from_module(module: Any, sample: Any, out_dir: str | Path, labels: Sequence[str] | None = None,
                threads: int = 1, opset: int = 17) -> ServedModel:
    """Serve a user's own (Lightning) module: export it to ONNX fp32 in ``out_dir`` (checked for parity) and load it.

    Args:
        module: a ``torch.nn.Module`` / ``LightningModule`` mapping a float batch to logits.
        sample: an example input batch (a tensor) fixing the sample shape.
        out_dir: where ``model.onnx`` and its manifest go.
        labels: class names.
    """
    import torch

    from mlcost_pl.export.onnx_export import export_onnx, onnx_parity
    from mlcost_pl.export.report import write_manifest

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    module = module.eval().cpu()
    sample = torch.as_tensor(sample).float()
    export_onnx(module, sample, folder / VARIANT_FILES["fp32"], opset=opset)
    onnx_parity(module, folder / VARIANT_FILES["fp32"], [sample], 1e-4, 1e-3)
    if labels:
        (folder / LABELS_FILE).write_text(json.dumps([str(v) for v in labels]))
    write_manifest(folder)
    return load_export(folder, variant="fp32", threads=threads)
