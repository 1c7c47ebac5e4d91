"""Export: ONNX fp32 + INT8 (static QDQ or dynamic) and bitsandbytes, gated on accuracy, with a cost report."""

from mlcost_pl.export.checkpoint_io import TrainingCheckpoint, load_training_checkpoint
from mlcost_pl.export.exporter import VerifyError, export, verify
from mlcost_pl.export.gate import GateFailedError
from mlcost_pl.export.onnx_export import ParityError

__all__ = [
    "GateFailedError",
    "ParityError",
    "TrainingCheckpoint",
    "VerifyError",
    "export",
    "load_training_checkpoint",
    "verify",
]
