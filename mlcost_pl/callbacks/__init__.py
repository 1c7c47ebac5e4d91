"""mlcost_pl's Lightning callbacks, one per module.

Imported lazily, so ``from mlcost_pl.callbacks import CostMonitor`` does not pull in every optional dependency.
"""

from __future__ import annotations

from mlcost_pl.utils.lazy import lazy_exports

_EXPORTS = {
    "SpotCheckpoint": "mlcost_pl.callbacks.spot_checkpoint",
    "PreemptionHandler": "mlcost_pl.callbacks.preemption_handler",
    "BatchSizeSearch": "mlcost_pl.callbacks.batch_size_search",
    "FreezeBackbone": "mlcost_pl.callbacks.freeze_backbone",
    "CostMonitor": "mlcost_pl.callbacks.cost_monitor",
    "StoreConfig": "mlcost_pl.callbacks.store_config",
    "ExtendSchedule": "mlcost_pl.callbacks.extend_schedule",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
