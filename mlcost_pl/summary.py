"""The end-of-run summary table printed by the recipes."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable


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
