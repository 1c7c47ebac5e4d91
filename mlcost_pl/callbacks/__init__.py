"""mlcost_pl's Lightning callbacks, one per module.

Imported lazily, so ``from mlcost_pl.callbacks import CostMonitor`` does not pull in every optional dependency.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SpotCheckpoint": "mlcost_pl.callbacks.spot_checkpoint",
    "PreemptionHandler": "mlcost_pl.callbacks.preemption_handler",
    "BatchSizeSearch": "mlcost_pl.callbacks.batch_size_search",
    "FreezeBackbone": "mlcost_pl.callbacks.freeze_backbone",
    "CostMonitor": "mlcost_pl.callbacks.cost_monitor",
    "StoreConfig": "mlcost_pl.callbacks.store_config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mlcost_pl.callbacks' has no attribute {name!r}; available: {', '.join(__all__)}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
