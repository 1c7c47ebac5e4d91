"""Proof of savings: ``uv run python -m recipes.savings [train overrides] savings.instance=g5.xlarge savings.quick=true``.

Reads top to bottom: workload and prices, then one bounded side-by-side measurement per row of ``savings.rows`` on the
configured model and data (``mlcost_pl.savings.rows.<row>.measure``, each calling the project's components or
benches), then the table, savings.md, savings.json and savings.png in the run folder. A row whose measurement fails is one line in that row; the others
still run. Rows with no measurement here say why; no figure is guessed.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mlcost_pl.config import register_resolvers
from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import CLAIMS, FAILED, NOT_MEASURED, Row, check_workload, monthly_bills
from mlcost_pl.savings.rows import MEASURES, RunContext
from mlcost_pl.savings.rows.batching import check_options
from recipes._cli import run_cli, user_error

register_resolvers()

# Rows with no bounded measurement in this recipe yet: where they are measured instead.
NOT_HERE = {
    "batch_size": "not measured here: BatchSizeSearch's throughput trials are not wired into this recipe yet; "
                  "see uv run python -m bench.batch_size_search --quick",
    "transfer": "not measured here: time-to-target needs a pretrained backbone and a target metric; "
                "see uv run python -m bench.transfer_savings",
    "feature_cache": "not measured here: recompute avoided is not wired into this recipe yet; "
                     "see uv run python -m bench.data_costs --quick",
}


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


def _bills(ctx: RunContext, rows: list[Row], price: Any) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The monthly bills the rows act on, and the serving capacity the serving bill used: measured by the batching
    row when it ran (or measured now when ``savings.replica_rps`` is null and a serving row was measured), else given."""
    from mlcost_pl.savings.report import BILLS, MEASURED
    from mlcost_pl.savings.rows.batching import serving_capacity

    s = ctx.cfg.savings
    bills: dict[str, float | None] = dict.fromkeys(BILLS)
    bills["storage"] = float(s.storage_usd_per_month) if s.storage_usd_per_month else None
    capacity: dict[str, Any] = ctx.cache.get("serve_capacity", {})
    if price is None:
        return bills, capacity
    if not capacity and (s.replica_rps is not None or any(r.acts_on == "serve" and r.status == MEASURED for r in rows)):
        try:
            capacity = serving_capacity(ctx)
        except Exception as err:  # the serving bill is then unknown; the rows stand
            if user_error(err) is None:
                traceback.print_exc()
            capacity = {"source": f"not measured: {_one_line(err)}"}
    if "rps" in capacity:
        bills = monthly_bills(price.on_demand, float(s.train_hours_per_month), float(s.predictions_per_month),
                              float(capacity["rps"]), float(s.storage_usd_per_month or 0))
        bills["storage"] = float(s.storage_usd_per_month) if s.storage_usd_per_month else None
    else:
        bills["train"] = price.on_demand * float(s.train_hours_per_month)
    return bills, capacity


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
    check_options(s)
    price, price_error = None, None
    try:
        price = resolve_instance(str(s.instance), usd_per_hour=s.get("usd_per_hour"))
    except UserInputError as err:  # an unknown instance: rows needing a price fail, the others still run
        price_error = _one_line(err)

    console = Console(width=200)
    ctx = RunContext(cfg, price, Path(tempfile.mkdtemp(prefix="mlcost-savings-")))
    rows: list[Row] = []
    start = time.perf_counter()
    try:
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
                    rows.append(MEASURES[key](ctx))
                except Exception as err:  # one row failing never stops the others; a bug keeps its traceback on stderr
                    if user_error(err) is None:
                        traceback.print_exc()
                    rows.append(Row(key, None, FAILED, f"failed: {_one_line(err)}"))
            r = rows[-1]
            shown = f"{100 * r.saving:+.1f}%" if r.saving is not None else r.status
            console.print(f"      -> {shown} in {time.perf_counter() - t0:.1f} s", style="red" if r.costs_more else None)
        bills, capacity = _bills(ctx, rows, price)  # may serve the export once more: before the scratch goes
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)  # the short fit's export and scratch files

    wall_s = time.perf_counter() - start
    context = {"model": cfg.model.backbone, "data": cfg.data._target_, "instance": price.name if price else price_error,
               "on-demand $/h": price.on_demand if price else None, "train_hours_per_month": s.train_hours_per_month,
               "predictions_per_month": s.predictions_per_month, "replica_rps": capacity.get("rps"),
               "replica_rps source": capacity.get("source"),
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
