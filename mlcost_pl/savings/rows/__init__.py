"""One module per row of the savings table; each ``measure(cfg, price) -> Row`` runs a bounded side-by-side
measurement on the configured model and data with the project's components (rows that reuse a benchmark import it
from ``bench/``, so they run from a checkout)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlcost_pl.savings.report import Row
from mlcost_pl.savings.rows import autoscale, compression, precision, quantization, spot

# row key -> measure(cfg, price) -> Row; keys missing here are "not measured" rows (see NOT_HERE in recipes.savings)
MEASURES: dict[str, Callable[[Any, Any], Row]] = {
    "spot": spot.measure,
    "precision": precision.measure,
    "quantization": quantization.measure,
    "autoscale": autoscale.measure,
    "compression": compression.measure,
}
