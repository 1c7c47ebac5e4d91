"""Checkpoint storage, manifests and the async writer: pure logic, no Trainer (and no Lightning import)."""

from mlcost_pl.checkpoint.async_writer import AsyncWriter, BufferPool, CheckpointWriteError, snapshot_to_cpu
from mlcost_pl.checkpoint.interval import young_daly_interval
from mlcost_pl.checkpoint.manifest import (
    CheckpointInvalid,
    CheckpointRef,
    apply_retention,
    commit_checkpoint,
    find_latest_valid,
    resolve_checkpoint,
    verify,
)
from mlcost_pl.checkpoint.storage import CheckpointDirError, CheckpointStorage

__all__ = [
    "AsyncWriter",
    "BufferPool",
    "CheckpointDirError",
    "CheckpointInvalid",
    "CheckpointRef",
    "CheckpointStorage",
    "CheckpointWriteError",
    "apply_retention",
    "commit_checkpoint",
    "find_latest_valid",
    "resolve_checkpoint",
    "snapshot_to_cpu",
    "verify",
    "young_daly_interval",
]
