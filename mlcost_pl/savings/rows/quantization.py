"""The quantization row: $ per million predictions, ORT INT8 vs ORT fp32 vs torch eager, from an export."""

from __future__ import annotations

from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, rerun

def measure(ctx: RunContext) -> Row:
    """$ per million predictions, ORT INT8 vs ORT fp32 (and torch eager fp32), from the run's export of a short fit."""
    cfg, price = ctx.cfg, ctx.price
    _, report = ctx.exported()
    _, _, steps = ctx.fitted()
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
