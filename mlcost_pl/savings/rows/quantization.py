"""The quantization row: $ per million predictions, ORT INT8 vs ORT fp32 vs torch eager fp32, from an export.

The three are re-timed here, one thread each and interleaved call by call, not taken from the export report: the
report times each variant in its own block of calls at torch's thread count (2 here), and on a busy 2-core machine
torch eager's OpenMP threads wait on each other whenever another process holds a core (2.5x slower at 2 threads than
at 1 on a contended run, while ONNX Runtime barely moved), so a block could put torch eager at ~20x ORT fp32. One
thread per call is also how ``recipes.serve`` runs a replica (``serve.threads=1``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, quietly, rerun

VARIANTS = ("torch_fp32", "ort_fp32", "ort_int8")


def interleaved_ms(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds per call of each of ``fns``, called round-robin ``rounds`` times after ``warmup`` rounds
    (the machine's load drifts alike for all of them)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


@quietly
def measure(ctx: RunContext) -> Row:
    """$ per million predictions, ORT INT8 vs ORT fp32 (and torch eager fp32), from the run's export of a short fit."""
    import numpy as np
    import torch

    from mlcost_pl.export.onnx_export import INPUT_NAME, ort_session
    from mlcost_pl.export.report import usd_per_million

    cfg, price = ctx.cfg, ctx.price
    out, report = ctx.exported()
    model, _, steps = ctx.fitted()
    files = {name: v.get("file") for name, v in report["variants"].items()}
    if "ort_int8" not in files:
        raise UserInputError("export produced no INT8 variant (quantization skipped by the exporter)")
    batch = 32
    with np.load(out / "verify_set.npz", allow_pickle=False) as data:
        x = data["x"].astype(np.float32)
    x = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
    xt = torch.from_numpy(x)
    sessions = {name: ort_session(out / files[name], threads=1) for name in ("ort_fp32", "ort_int8")}

    def eager() -> None:
        with torch.inference_mode():
            model(xt)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ms = interleaved_ms({"torch_fp32": eager,
                             "ort_fp32": lambda: sessions["ort_fp32"].run(None, {INPUT_NAME: x}),
                             "ort_int8": lambda: sessions["ort_int8"].run(None, {INPUT_NAME: x})},
                            rounds=10 if cfg.savings.quick else 40)
    finally:
        torch.set_num_threads(threads)
    usd = {name: usd_per_million(ms[name], batch, price.on_demand) for name in VARIANTS}
    saving = 1.0 - usd["ort_int8"] / usd["ort_fp32"]  # the same runtime: what quantization itself saves
    note = (f"$ per million predictions at batch {batch}, 1 thread, {10 if cfg.savings.quick else 40} interleaved calls "
            f"each (median) on {price.name} (${price.on_demand}/h): ORT INT8 ${usd['ort_int8']:.4f} vs ORT fp32 "
            f"${usd['ort_fp32']:.4f} (torch eager fp32 ${usd['torch_fp32']:.4f}, {ms['torch_fp32'] / ms['ort_fp32']:.1f}x "
            f"ORT fp32); export of {cfg.model.backbone} after {steps} training steps, accuracy gate passed "
            f"(metrics {', '.join(f'{k} {v:.3f}' for k, v in report['metrics'].items())})")
    return Row("quantization", saving, MEASURED, note, rerun("quantization"),
               {"usd_per_million": usd, "ms_per_batch": ms, "batch": batch, "threads": 1, "metrics": report["metrics"],
                "export_report_usd_per_million": {n: v["usd_per_million"] for n, v in report["variants"].items()}})
