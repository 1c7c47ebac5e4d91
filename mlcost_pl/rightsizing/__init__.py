"""Right-sizing: pure batch-size search strategies, CPU peak-memory measurement, the on-disk result cache and the
trial steps (:mod:`mlcost_pl.rightsizing.probe`).

:class:`mlcost_pl.callbacks.BatchSizeSearch` is the Lightning adapter.
"""

from mlcost_pl.rightsizing.cache import SearchCache, cache_key
from mlcost_pl.rightsizing.memory import StepMemory, measure_step_memory
from mlcost_pl.rightsizing.search import (
    SearchResult,
    expected_saving,
    explain_choice,
    fit_global_batch,
    max_fit_search,
    min_over_ranks,
    pick_throughput,
    throughput_search,
)

__all__ = [
    "SearchCache",
    "SearchResult",
    "StepMemory",
    "cache_key",
    "expected_saving",
    "explain_choice",
    "fit_global_batch",
    "max_fit_search",
    "measure_step_memory",
    "min_over_ranks",
    "pick_throughput",
    "throughput_search",
]
