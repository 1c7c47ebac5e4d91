"""Print the cost ledger: ``uv run python -m recipes.costs [ledger=...] [last=20] [config_hash=...]``.

Reads top to bottom: open the ledger, print the history, compare the latest run with the average of similar runs.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from mlcost_pl.config import register_resolvers
from mlcost_pl.cost.anomaly import compare_with_similar
from mlcost_pl.cost.ledger import format_rows, open_ledger
from mlcost_pl.errors import MissingInputError, UserInputError
from mlcost_pl.summary import table_width
from mlcost_pl.utils.fs import exists
from recipes._cli import run_cli

register_resolvers()

HISTORY = ("started_at", "name", "status", "instance", "market", "num_instances", "steps", "duration_s", "usd_total",
           "usd_per_step", "config_hash")


def costs(cfg: DictConfig) -> dict[str, Any]:
    """Print the ledger's last ``cfg.last`` runs and the latest run against similar ones; return both."""
    from rich.console import Console
    from rich.table import Table

    url = str(cfg.ledger)
    if not exists(url):
        raise MissingInputError(f"ledger={url}: no ledger there yet (runs with the cost_monitor callback write it)")
    if not isinstance(cfg.last, int) or cfg.last < 1:
        raise UserInputError(f"last must be an integer >= 1, got {cfg.last!r}")
    rows = open_ledger(url).rows()
    if cfg.get("config_hash"):
        rows = [r for r in rows if r.get("config_hash") == cfg.config_hash]
    console = Console(width=table_width(250))  # the terminal's width; wide enough not to wrap in a log
    history = Table(title=f"cost ledger: {url} ({len(rows)} runs)", title_justify="left")
    for column in HISTORY:
        history.add_column(column)
    for cells in format_rows(rows[-cfg.last :], HISTORY):
        history.add_row(*cells)
    console.print(history)

    comparison: list[dict[str, Any]] = []
    if rows:
        latest = rows[-1]
        comparison = compare_with_similar(latest, rows, k=cfg.k)
        runs = comparison[0]["runs"]
        table = Table(title=f"latest run {latest.get('name')} ({latest.get('run_id', '')[:8]}) vs the average of {runs} similar "
                      f"finished run(s) (config {latest.get('config_hash')})", title_justify="left")
        for column in ("figure", "latest", "similar average", "ratio", ""):
            table.add_column(column)
        for item in comparison:
            cells = format_rows([{"a": item["latest"], "b": item["average"], "c": item["ratio"]}], ("a", "b", "c"))[0]
            table.add_row(item["figure"], *cells, f"over {cfg.k:g}x" if item["over_k"] else "")
        console.print(table)
    return {"rows": rows, "comparison": comparison}


@hydra.main(version_base="1.3", config_path="../configs", config_name="costs")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_cli(costs, cfg)


if __name__ == "__main__":
    main()
