"""Checkpoint storage, manifests and the async writer: pure logic, no Trainer (and no Lightning import).

Imported lazily, so ``python -m mlcost_pl.supervise`` can list committed checkpoints without importing torch.
"""

from __future__ import annotations

from mlcost_pl.utils.lazy import lazy_exports

_EXPORTS = {
    "AsyncWriter": "mlcost_pl.checkpoint.async_writer",
    "BufferPool": "mlcost_pl.checkpoint.async_writer",
    "CheckpointWriteError": "mlcost_pl.checkpoint.async_writer",
    "snapshot_to_cpu": "mlcost_pl.checkpoint.async_writer",
    "young_daly_interval": "mlcost_pl.checkpoint.interval",
    "CheckpointInvalid": "mlcost_pl.checkpoint.manifest",
    "CheckpointRef": "mlcost_pl.checkpoint.manifest",
    "apply_retention": "mlcost_pl.checkpoint.manifest",
    "commit_checkpoint": "mlcost_pl.checkpoint.manifest",
    "committed_checkpoints": "mlcost_pl.checkpoint.manifest",
    "find_latest_valid": "mlcost_pl.checkpoint.manifest",
    "resolve_checkpoint": "mlcost_pl.checkpoint.manifest",
    "verify": "mlcost_pl.checkpoint.manifest",
    "CheckpointDirError": "mlcost_pl.checkpoint.storage",
    "CheckpointStorage": "mlcost_pl.checkpoint.storage",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
