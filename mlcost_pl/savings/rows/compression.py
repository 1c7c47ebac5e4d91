"""The compression row: bytes stored vs as fed, the configured data written by litdata.optimize."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, quietly, rerun


@quietly
def measure(ctx: RunContext) -> Row:
    """Bytes stored vs as fed: the configured data written by litdata.optimize (zstd, uint8 images)."""
    from hydra.utils import instantiate

    from mlcost_pl.data.optimize import optimize_datamodule

    cfg = ctx.cfg
    datamodule = instantiate(cfg.data)
    work = Path(tempfile.mkdtemp(prefix="savings-data-"))
    try:
        manifest = optimize_datamodule(datamodule, str(work / "opt"), compression="zstd", image_dtype="uint8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    note = (f"{manifest.raw_bytes:,} bytes as fed (float32) -> {manifest.stored_bytes:,} stored (zstd chunks, uint8 "
            f"images, lossy within half a step) for {cfg.data._target_.rsplit('.', 1)[-1]}")
    return Row("compression", manifest.saving, MEASURED, note,
               rerun("compression"),
               {"raw_bytes": manifest.raw_bytes, "stored_bytes": manifest.stored_bytes})
