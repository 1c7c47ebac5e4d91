"""The end-of-run summary tables printed by the recipes, and the cost rows read off a Trainer's CostMonitor.

No Lightning import at module level: the trainer is only read."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable, Mapping
from typing import Any


def format_value(value: object) -> str:
    """Render floats compactly, everything else with ``str``."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def table_width(needed: int) -> int:
    """Columns for a table that needs ``needed``: the terminal's width on a terminal, else ``needed`` (a log or a
    pipe has no width, and a path cut or folded there no longer pastes)."""
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return max(40, needed)


def print_summary(title: str, rows: Iterable[tuple[str, object]]) -> str:
    """Print a two-column table with rich, sized to the terminal, and return its plain text (for logs and tests).

    Values are never cut: on a terminal narrower than a value, the value folds onto the next lines.
    """
    from rich.console import Console
    from rich.table import Table

    cells = [(key, format_value(value)) for key, value in rows]
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold", overflow="fold")
    table.add_column("value", overflow="fold")
    for key, value in cells:
        table.add_row(key, value)
    needed = max((len(k) for k, _ in cells), default=0) + max((len(v) for _, v in cells), default=0) + 7
    console = Console(width=table_width(max(needed, len(title))))
    with console.capture() as capture:
        console.print(table)
    text = capture.get()
    print(text, end="")
    return text


def _cost_monitor(trainer: Any) -> Any | None:
    from mlcost_pl.callbacks.cost_monitor import CostMonitor

    return next((c for c in trainer.callbacks if isinstance(c, CostMonitor)), None)


def techniques_in_use(trainer: Any) -> list[str]:
    """mlcost_pl callbacks on the trainer plus precision, strategy and gradient accumulation when not the default."""
    out = [type(c).__name__ for c in trainer.callbacks
           if type(c).__module__.startswith("mlcost_pl.") and type(c).__name__ != "AttemptSteps"]  # bookkeeping only
    if str(trainer.precision) not in ("32-true", "32"):
        out.append(f"precision={trainer.precision}")
    if trainer.world_size > 1:
        out.append(f"{type(trainer.strategy).__name__} x {trainer.world_size}")
    if trainer.accumulate_grad_batches > 1:
        out.append(f"accumulate_grad_batches={trainer.accumulate_grad_batches}")
    return out


def cost_summary_rows(trainer: Any) -> list[tuple[str, object]]:
    """Rows for the recipes' cost table: spent, on-demand vs spot equivalent, lost to preemption, checkpoint overhead
    and the techniques in use. Empty when the trainer has no :class:`CostMonitor`."""
    monitor = _cost_monitor(trainer)
    if monitor is None:
        return []
    f = monitor.figures(trainer)
    m = monitor.meter
    rows: list[tuple[str, object]] = [
        ("instance", f"{monitor.instance} x {monitor.num_instances} ({monitor.price.cloud}, {monitor.market}, ${m.usd_per_hour:.4g}/h)"),
        ("spent (USD)", m.usd_total),
        ("on-demand equivalent (USD)", f["cost/usd_on_demand_equivalent"]),
        ("spot equivalent (USD)", f.get("cost/usd_spot_equivalent", "no spot price")),
        ("USD per step", m.usd_per_step_overall if m.usd_per_step_overall is not None else "-"),
        ("billed time (s)", m.seconds_total),
    ]
    if "cost/usd_lost_preemption" in f:
        rows.append(("lost to preemption", f"${f['cost/usd_lost_preemption']:.4g} ({int(f['cost/lost_steps'])} steps re-done)"))
    else:
        rows.append(("lost to preemption", "not tracked (no SpotCheckpoint)"))
    if "cost/checkpoint_s" in f:
        rows.append(("checkpoint overhead", f"{f['cost/checkpoint_s']:.3g} s = ${f['cost/usd_checkpoint']:.4g}"))
    else:
        rows.append(("checkpoint overhead", "not tracked (no SpotCheckpoint)"))
    if monitor.max_usd is not None:
        rows.append(("budget", f"${monitor.max_usd:.4g} ({monitor.budget_on}); {monitor.status}"))
    if monitor.alerts:
        rows.append(("cost alerts", "; ".join(a.message() for a in monitor.alerts)))
    rows.append(("techniques", ", ".join(techniques_in_use(trainer)) or "none"))
    if monitor.ledger_url:
        rows.append(("ledger", monitor.ledger_url))
    return rows


def record_final_metrics(trainer: Any, metrics: Mapping[str, float]) -> None:
    """Add metrics known only after fit (e.g. ``test/acc``) to the run's ledger row (rank zero; never raises)."""
    monitor = _cost_monitor(trainer)
    if monitor is None or monitor.ledger_url is None or not trainer.is_global_zero or monitor._dry_run:
        return
    from lightning.pytorch.utilities import rank_zero_warn

    from mlcost_pl.cost.ledger import merge_row, open_ledger

    try:
        row = monitor._row(trainer)
        row["metrics"].update({k: float(v) for k, v in metrics.items() if not k.startswith(("cost/", "gpu/"))})
        ledger = open_ledger(monitor.ledger_url, monitor.ledger_storage_options)
        ledger.upsert(merge_row(ledger.get(monitor.run_id), row, trained=trainer.global_step > monitor._start_step))
    except Exception as err:  # noqa: BLE001 - a report must not fail the run
        rank_zero_warn(f"CostMonitor: could not update the ledger {monitor.ledger_url}: {err}")
