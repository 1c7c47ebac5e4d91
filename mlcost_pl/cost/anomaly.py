"""Cost anomalies: a run costing more than ``k`` x the historical average of similar runs.

"Similar" means the same ``config_hash`` (CostMonitor hashes the model and data hyper-parameters, the instance, the
device count and the planned steps). Pure Python: no Lightning, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mlcost_pl.errors import UserInputError

# What is compared: (name of the live figure, ledger column holding the historical figure).
CHECKS = (("usd_per_step", "usd_per_step"), ("usd_projected", "usd_total"))


@dataclass(frozen=True)
class Baseline:
    """Averages over the similar finished runs (``None`` where no run recorded the figure)."""

    runs: int
    usd_per_step: float | None
    usd_total: float | None


@dataclass(frozen=True)
class Anomaly:
    """One figure over its threshold."""

    metric: str
    value: float
    average: float
    ratio: float
    k: float
    runs: int

    def message(self) -> str:
        return (
            f"cost anomaly: {self.metric} = ${self.value:.6g} is {self.ratio:.2f}x the average ${self.average:.6g} "
            f"of {self.runs} similar run(s) (threshold {self.k:g}x)"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def baseline(rows: Iterable[Mapping[str, Any]], statuses: tuple[str, ...] = ("finished",)) -> Baseline:
    """Average dollars per step and dollars per run over ``rows`` whose ``status`` is in ``statuses``.

    Example:
        >>> baseline([{"status": "finished", "usd_per_step": 0.1, "usd_total": 10.0},
        ...           {"status": "finished", "usd_per_step": 0.3, "usd_total": 30.0}])
        Baseline(runs=2, usd_per_step=0.2, usd_total=20.0)
    """
    rows = [r for r in rows if r.get("status") in statuses]
    return Baseline(
        runs=len(rows),
        usd_per_step=_mean([r.get("usd_per_step") for r in rows]),
        usd_total=_mean([r.get("usd_total") for r in rows]),
    )


def check(base: Baseline, current: Mapping[str, float | None], k: float, min_runs: int = 1) -> list[Anomaly]:
    """The figures of ``current`` (``usd_per_step``, ``usd_projected``) above ``k`` x their historical average.

    Raises:
        ValueError: ``k`` <= 0 or ``min_runs`` < 1.

    Example:
        >>> check(Baseline(3, 0.1, 10.0), {"usd_per_step": 0.25, "usd_projected": 12.0}, k=2.0)[0].metric
        'usd_per_step'
    """
    if not k > 0:
        raise UserInputError(f"k must be > 0, got {k!r}")
    if min_runs < 1:
        raise UserInputError(f"min_runs must be >= 1, got {min_runs!r}")
    if base.runs < min_runs:
        return []
    out = []
    for live, column in CHECKS:
        value, average = current.get(live), getattr(base, column)
        if value is None or average is None or average <= 0:
            continue
        if value > k * average:
            out.append(Anomaly(metric=live, value=float(value), average=average, ratio=value / average, k=k, runs=base.runs))
    return out


def compare_with_similar(latest: Mapping[str, Any], rows: Iterable[Mapping[str, Any]], k: float | None = None) -> list[dict[str, Any]]:
    """The latest run's dollars, dollars per step and duration against the average of similar finished runs.

    ``rows`` are the ledger's rows; similar = same ``config_hash``, another ``run_id``, status ``finished``. Each
    returned item: ``figure``, ``latest``, ``average``, ``ratio`` (``None`` without history) and ``over_k``.

    Example:
        >>> past = [{"run_id": "a", "config_hash": "h", "status": "finished", "usd_total": 2.0, "usd_per_step": 0.1, "duration_s": 10.0}]
        >>> latest = {"run_id": "b", "config_hash": "h", "usd_total": 3.0, "usd_per_step": 0.1, "duration_s": 10.0}
        >>> compare_with_similar(latest, past)[0]["ratio"]
        1.5
    """
    similar = [r for r in rows if r.get("config_hash") == latest.get("config_hash") and r.get("run_id") != latest.get("run_id")
               and r.get("status") == "finished"]
    out = []
    for figure in ("usd_total", "usd_per_step", "duration_s"):
        average = _mean([r.get(figure) for r in similar])
        value = latest.get(figure)
        ratio = value / average if value is not None and average else None
        out.append({"figure": figure, "latest": value, "average": average, "runs": len(similar), "ratio": ratio,
                    "over_k": bool(k is not None and ratio is not None and ratio > k)})
    return out
