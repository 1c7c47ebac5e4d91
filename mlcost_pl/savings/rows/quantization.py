"""The quantization row: $ per million predictions, ORT INT8 vs ORT fp32 vs torch eager, from an export."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import quiet, rerun

def measure(cfg: DictConfig, price: Any) -> Row:
    """$ per million predictions, ORT INT8 vs torch eager fp32 (and ORT fp32), from mlcost_pl.export of a short fit."""
    import lightning as L
    from hydra.utils import instantiate

    from mlcost_pl.export import export

    if price is None:
        raise UserInputError("savings.instance: no price for $ per million predictions")
    quiet()
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    steps = 30 if cfg.savings.quick else 200
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], max_steps=steps, max_epochs=-1, limit_val_batches=0,
                          num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=tempfile.gettempdir())
    trainer.fit(model, datamodule=datamodule)
    work = Path(tempfile.mkdtemp(prefix="savings-export-"))
    try:
        report = export(model.eval(), datamodule, work / "model", price_per_hour=price.on_demand, batch_sizes=(1, 32),
                        latency_iters=5 if cfg.savings.quick else 20)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    usd = {name: v["usd_per_million"] for name, v in report["variants"].items()}
    if "ort_int8" not in usd:
        raise UserInputError("export produced no INT8 variant (quantization skipped by the exporter)")
    saving = 1.0 - usd["ort_int8"] / usd["ort_fp32"]  # the same runtime: what quantization itself saves
    note = (f"$ per million predictions at batch 32 on {price.name} (${price.on_demand}/h): ORT INT8 ${usd['ort_int8']:.4f} vs "
            f"ORT fp32 ${usd['ort_fp32']:.4f} (torch eager fp32 ${usd['torch_fp32']:.4f}); export of "
            f"{cfg.model.backbone} after {steps} training steps, accuracy gate passed "
            f"(metrics {', '.join(f'{k} {v:.3f}' for k, v in report['metrics'].items())})")
    return Row("quantization", saving, MEASURED, note, rerun("quantization"),
               {"usd_per_million": usd, "metrics": report["metrics"]})
