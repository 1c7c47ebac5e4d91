"""Export: ONNX fp32 + INT8 (static QDQ or dynamic) and bitsandbytes, gated on accuracy, with a cost report.

Imported lazily, so ``mlcost_pl.export.report`` (hashes, manifests) can be used without importing torch.
"""

from __future__ import annotations

from mlcost_pl.utils.lazy import lazy_exports

_EXPORTS = {
    "GateFailedError": "mlcost_pl.export.gate",
    "ParityError": "mlcost_pl.export.onnx_export",
    "TrainingCheckpoint": "mlcost_pl.export.checkpoint_io",
    "VerifyError": "mlcost_pl.export.exporter",
    "export": "mlcost_pl.export.exporter",
    "load_training_checkpoint": "mlcost_pl.export.checkpoint_io",
    "verify": "mlcost_pl.export.exporter",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
