"""Proof of savings: ``uv run python -m recipes.savings [train overrides] savings.instance=g5.xlarge savings.quick=true``.

Reads top to bottom: workload and prices, then one bounded side-by-side measurement per row of ``savings.rows`` on the
configured model and data (each calling the project's components or benches), then the table, savings.md,
savings.json and savings.png in the run folder. A row whose measurement fails is one line in that row; the others
still run. Rows with no measurement here say why; no figure is guessed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mlcost_pl.config import register_resolvers
from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import CLAIMS, FAILED, MEASURED, NOT_MEASURED, Row, check_workload, monthly_bills
from recipes._cli import run_cli, user_error

register_resolvers()

# Rows with no bounded measurement in this recipe yet: where they are measured instead.
NOT_HERE = {
    "batch_size": "not measured here: BatchSizeSearch's throughput trials are not wired into this recipe yet; "
                  "see uv run python -m bench.batch_size_search --quick",
    "transfer": "not measured here: time-to-target needs a pretrained backbone and a target metric; "
                "see uv run python -m bench.transfer_savings",
    "batching": "not measured here: the served-throughput run is not wired into this recipe yet; "
                "see uv run python -m bench.serving --quick",
    "feature_cache": "not measured here: recompute avoided is not wired into this recipe yet; "
                     "see uv run python -m bench.data_costs --quick",
}


def _overrides() -> str:
    """The command line's overrides (empty outside a Hydra run)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return " ".join(o for o in HydraConfig.get().overrides.task if not o.startswith("savings.rows"))
    except ValueError:
        return ""


def _rerun(key: str) -> str:
    """The command that re-runs only row ``key`` with this run's overrides."""
    return " ".join(["uv run python -m recipes.savings", _overrides(), f"savings.rows=[{key}]"]).replace("  ", " ")


def measure_spot(cfg: DictConfig, price: Any) -> Row:
    """Catalog spot/on-demand price x measured goodput (bench.preemption_goodput's run, seeded SIGTERM schedule)."""
    import random

    from bench.preemption_goodput import STEPS_PER_EPOCH, run_one

    _quiet()
    if price.spot is None:
        raise UserInputError(f"savings.instance={price.name!r} has no spot price in the catalog")
    epochs, every_n, grace_s = (2 if cfg.savings.quick else 4), 20, 2.0
    rng = random.Random(int(cfg.seed))
    gaps = [rng.randint(STEPS_PER_EPOCH // 2, 2 * STEPS_PER_EPOCH) for _ in range(200)]
    goodput = {}
    for method in ("ours", "mc_steps", "mc_epoch"):
        work = Path(tempfile.mkdtemp(prefix=f"savings-spot-{method}-"))
        try:
            with contextlib.chdir(work):  # nothing the attempts write lands in the caller's folder
                r = run_one(method, epochs, every_n, gaps, grace_s, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        goodput[method] = r["useful"] / r["executed"]
    ratio = price.spot / price.on_demand
    saving = 1.0 - ratio / goodput["ours"]
    others = ", ".join(f"{name}: goodput {goodput[m]:.3f}, saving {100 * (1 - ratio / goodput[m]):.1f}%"
                       for m, name in (("mc_steps", f"ModelCheckpoint every {every_n} steps"), ("mc_epoch", "per-epoch ModelCheckpoint")))
    note = (f"{price.name} spot ${price.spot}/h vs on-demand ${price.on_demand}/h (catalog) / goodput "
            f"{goodput['ours']:.3f} with SpotCheckpoint(every {every_n} steps)+PreemptionHandler ({others}); "
            f"{epochs} epochs of bench.preemption_goodput's tiny MLP on digits (not your model), seeded SIGTERMs every "
            f"0.5-2 epochs, SIGKILL {grace_s:g} s after each")
    return Row("spot", saving, MEASURED, note, "uv run python -m bench.preemption_goodput --quick",
               {"spot_usd_per_h": price.spot, "on_demand_usd_per_h": price.on_demand, "goodput": goodput})


def _step_timer(warmup: int) -> Any:
    """A Lightning callback recording each training step's seconds after ``warmup`` steps (in ``.times``)."""
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step > warmup:
                self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def _step_time(cfg: DictConfig, precision: str, steps: int, warmup: int = 2) -> tuple[float, float | None]:
    """Median step seconds and peak CUDA memory (GiB, None on CPU) of the configured model/data at ``precision``."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    _quiet()
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    timer = _step_timer(warmup)
    trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False, precision=precision, max_steps=steps + warmup,
                          max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, default_root_dir=tempfile.gettempdir())
    cuda = torch.cuda.is_available() and trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, datamodule=datamodule)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return statistics.median(timer.times), peak


def measure_precision(cfg: DictConfig, price: Any) -> Row:
    """Step time (and peak CUDA memory) at precision=auto vs 32-true, interleaved, on the configured model/data."""
    from mlcost_pl.precision import resolve_precision

    auto, reason = resolve_precision("auto", accelerator=str(cfg.trainer.get("accelerator", "auto")))
    command = _rerun("precision")
    if auto == "32-true":
        return Row("precision", 0.0, MEASURED, f"precision=auto keeps 32-true here ({reason}): no change, no saving", command)
    steps = int(cfg.savings.steps or (10 if cfg.savings.quick else 30))
    times: dict[str, list[float]] = {"32-true": [], auto: []}
    peaks: dict[str, float | None] = {}
    for repeat in range(2):
        for p in (("32-true", auto) if repeat % 2 == 0 else (auto, "32-true")):
            t, peaks[p] = _step_time(cfg, p, steps)
            times[p].append(t)
    fp32, mixed = statistics.median(times["32-true"]), statistics.median(times[auto])
    mem = (f"; peak memory {peaks[auto]:.2f} vs {peaks['32-true']:.2f} GiB" if peaks[auto] is not None else
           "; peak memory not measured on CPU")
    note = (f"median step {1e3 * mixed:.1f} ms at {auto} vs {1e3 * fp32:.1f} ms at 32-true ({reason}); {steps} steps x 2 "
            f"interleaved repeats, {cfg.model.backbone}, batch {cfg.data.get('batch_size')}{mem}")
    return Row("precision", 1.0 - mixed / fp32, MEASURED, note, command,
               {"step_s": {"32-true": fp32, auto: mixed}, "peak_gib": peaks})


def measure_autoscale(cfg: DictConfig, price: Any) -> Row:
    """Replica-hours of the recommended HPA vs static peak on the trace, from the autoscale simulator's search."""
    from mlcost_pl.autoscale.capacity import Capacity
    from mlcost_pl.autoscale.plan import search
    from mlcost_pl.autoscale.trace import load_trace

    s = cfg.savings
    capacity = Capacity(rps=float(s.replica_rps))
    trace = load_trace(str(s.trace), seed=int(cfg.seed))
    plan = search(trace, capacity, price.on_demand if price else 0.0, max_slo_miss=float(s.max_slo_miss))
    if plan.recommended is None:
        raise UserInputError(f"savings.max_slo_miss={s.max_slo_miss}: no HPA setting meets it on trace {s.trace}")
    saving = 1.0 - plan.recommended.replica_hours / plan.static.replica_hours
    note = (f"{trace.name} trace (peak {trace.rps.max():.0f}/s, {trace.duration_s / 3600:.0f} h): recommended HPA "
            f"{plan.recommended.replica_hours:.0f} vs static peak {plan.static.replica_hours:.0f} replica-hours, "
            f"{100 * plan.recommended.miss_share:.3f}% SLO misses; capacity {capacity.rps:g}/s per replica given by "
            f"savings.replica_rps (not measured here: recipes.autoscale measure)")
    command = f"uv run python -m recipes.autoscale plan capacity.rps={capacity.rps:g} trace={s.trace}"
    if price is not None:
        command += f" plan.instance={price.name}"
    return Row("autoscale", saving, MEASURED, note, command,
               {"recommended": plan.recommended.summary(), "static": plan.static.summary(), "values": plan.values})


def measure_compression(cfg: DictConfig, price: Any) -> Row:
    """Bytes stored vs as fed: the configured data written by litdata.optimize (zstd, uint8 images)."""
    from hydra.utils import instantiate

    from mlcost_pl.data.optimize import optimize_datamodule

    datamodule = instantiate(cfg.data)
    work = Path(tempfile.mkdtemp(prefix="savings-data-"))
    try:
        manifest = optimize_datamodule(datamodule, str(work / "opt"), compression="zstd", image_dtype="uint8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    note = (f"{manifest.raw_bytes:,} bytes as fed (float32) -> {manifest.stored_bytes:,} stored (zstd chunks, uint8 "
            f"images, lossy within half a step) for {cfg.data._target_.rsplit('.', 1)[-1]}")
    return Row("compression", manifest.saving, MEASURED, note,
               _rerun("compression"),
               {"raw_bytes": manifest.raw_bytes, "stored_bytes": manifest.stored_bytes})


def measure_quantization(cfg: DictConfig, price: Any) -> Row:
    """$ per million predictions, ORT INT8 vs torch eager fp32 (and ORT fp32), from mlcost_pl.export of a short fit."""
    import lightning as L
    from hydra.utils import instantiate

    from mlcost_pl.export import export

    if price is None:
        raise UserInputError("savings.instance: no price for $ per million predictions")
    _quiet()
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
    return Row("quantization", saving, MEASURED, note, _rerun("quantization"),
               {"usd_per_million": usd, "metrics": report["metrics"]})


MEASURES = {"spot": measure_spot, "precision": measure_precision, "quantization": measure_quantization,
            "autoscale": measure_autoscale, "compression": measure_compression}


def _quiet() -> None:
    """The progress lines, not each Trainer's banner (call after importing Lightning: its import sets INFO)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"


def _print_table(rows: list[Row], bills: dict[str, Any], total: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from mlcost_pl.savings.report import HEADER, table_rows

    table = Table(title=title, title_justify="left", show_lines=True)
    for column in HEADER:
        table.add_column(column, overflow="fold")
    for r, cells in zip(rows, table_rows(rows, bills)):
        style = "red" if r.costs_more or r.status == FAILED else ("dim" if r.status == NOT_MEASURED else None)
        table.add_row(*cells, style=style)
    console = Console(width=200)
    console.print(table)
    if not total["before_usd"]:
        console.print("combined: no monthly bill to apply the savings to (no prices or no workload)")
        return
    console.print(f"combined: ${total['before_usd']:,.2f}/month -> ${total['after_usd']:,.2f}/month "
                  f"({100 * total['saving']:.1f}% less). Assumption: {total['assumption']}.")


def savings(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure each row of ``cfg.savings.rows``; write savings.md/json/png to ``cfg.paths.output_dir``."""
    from rich.console import Console

    from mlcost_pl.cost.catalog import resolve_instance
    from mlcost_pl.savings.report import write_report

    s = cfg.savings
    keys = list(s.rows)
    unknown = [k for k in keys if k not in CLAIMS]
    if unknown or not keys:
        raise UserInputError(f"savings.rows: unknown {unknown or 'empty list'}; choose from {', '.join(CLAIMS)}")
    check_workload(s.train_hours_per_month, s.predictions_per_month)
    price, price_error = None, None
    try:
        price = resolve_instance(str(s.instance), usd_per_hour=s.get("usd_per_hour"))
        bills: dict[str, float | None] = monthly_bills(price.on_demand, float(s.train_hours_per_month),
                                                       float(s.predictions_per_month), float(s.replica_rps),
                                                       float(s.storage_usd_per_month or 0))
    except UserInputError as err:  # an unknown instance: rows needing a price fail, the others still run
        price_error = _one_line(err)
        bills = {"train": None, "serve": None, "storage": float(s.storage_usd_per_month or 0)}
    if not s.storage_usd_per_month:
        bills["storage"] = None

    console = Console(width=200)
    rows: list[Row] = []
    start = time.perf_counter()
    for i, key in enumerate(keys):
        left = ", ".join(keys[i + 1:]) or "none"
        console.print(f"[bold][{i + 1}/{len(keys)}] {CLAIMS[key][0]}[/bold]  elapsed {time.perf_counter() - start:.0f} s; left: {left}")
        t0 = time.perf_counter()
        if key not in MEASURES:
            rows.append(Row(key, None, NOT_MEASURED, NOT_HERE[key]))
        elif price is None and key in ("spot", "quantization"):
            rows.append(Row(key, None, FAILED, f"failed: {price_error}"))
        else:
            try:
                rows.append(MEASURES[key](cfg, price))
            except Exception as err:  # one row failing never stops the others; a bug keeps its traceback on stderr
                if user_error(err) is None:
                    traceback.print_exc()
                rows.append(Row(key, None, FAILED, f"failed: {_one_line(err)}"))
        r = rows[-1]
        shown = f"{100 * r.saving:+.1f}%" if r.saving is not None else r.status
        console.print(f"      -> {shown} in {time.perf_counter() - t0:.1f} s", style="red" if r.costs_more else None)

    wall_s = time.perf_counter() - start
    context = {"model": cfg.model.backbone, "data": cfg.data._target_, "instance": price.name if price else price_error,
               "on-demand $/h": price.on_demand if price else None, "train_hours_per_month": s.train_hours_per_month,
               "predictions_per_month": s.predictions_per_month, "replica_rps": s.replica_rps,
               "quick": bool(s.quick), "wall_s": round(wall_s, 1),
               "serving bill": "predictions_per_month / (replica_rps x 3600) replica-hours x on-demand $/h"}
    out = Path(str(cfg.paths.output_dir))
    total = write_report(rows, bills, context, out)
    _print_table(rows, bills, total, f"savings on {cfg.model.backbone} ({price.name if price else 'no prices'}), {wall_s:.0f} s")
    console.print(f"wrote {out / 'savings.md'}, savings.json, savings.png")
    results = {"rows": {r.key: r.saving for r in rows}, "combined": total, "wall_s": wall_s}
    return results, {"rows": rows, "bills": bills, "out": out}


@hydra.main(version_base="1.3", config_path="../configs", config_name="savings")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_cli(savings, cfg)


if __name__ == "__main__":
    main()
