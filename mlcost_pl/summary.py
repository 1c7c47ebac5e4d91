"""The end-of-run summary table printed by the recipes."""

from __future__ import annotations

from collections.abc import Iterable


def format_value(value: object) -> str:
    """Render floats compactly, everything else with ``str``."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def print_summary(title: str, rows: Iterable[tuple[str, object]]) -> str:
    """Print a two-column table with rich and return its plain text (for logs and tests)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, format_value(value))
    console = Console(width=120)
    with console.capture() as capture:
        console.print(table)
    text = capture.get()
    print(text, end="")
    return text
