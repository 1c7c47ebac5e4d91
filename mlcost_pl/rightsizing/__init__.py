"""Right-sizing: pure batch-size search strategies, CPU peak-memory measurement and the on-disk result cache.

No Trainer here; :class:`mlcost_pl.callbacks.BatchSizeSearch` is the Lightning adapter.
"""

from mlcost_pl.rightsizing.cache import SearchCache, cache_key
from mlcost_pl.rightsizing.memory import StepMemory, measure_step_memory
from mlcost_pl.rightsizing.search import (
    SearchResult,
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
    "fit_global_batch",
    "max_fit_search",
    "measure_step_memory",
    "min_over_ranks",
    "pick_throughput",
    "throughput_search",
]
