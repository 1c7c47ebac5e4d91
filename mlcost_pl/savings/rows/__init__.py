"""One module per row of the savings table; each ``measure(ctx: RunContext) -> Row`` runs a bounded side-by-side
measurement on the configured model and data with the project's components (rows that reuse a benchmark import it
from ``bench/``, so they run from a checkout)."""

from __future__ import annotations

from collections.abc import Callable

from mlcost_pl.savings.report import Row
from mlcost_pl.savings.rows import autoscale, batching, compression, precision, quantization, spot
from mlcost_pl.savings.rows.common import RunContext

# row key -> measure(ctx) -> Row; keys missing here are "not measured" rows (see NOT_HERE in recipes.savings)
MEASURES: dict[str, Callable[[RunContext], Row]] = {
    "spot": spot.measure,
    "precision": precision.measure,
    "quantization": quantization.measure,
    "batching": batching.measure,
    "autoscale": autoscale.measure,
    "compression": compression.measure,
}

__all__ = ["MEASURES", "RunContext"]
