"""Preemption: signal and cloud-notice handling, exact mid-epoch resume, restart policy. No Trainer here.

Imported lazily so ``python -m mlcost_pl.supervise`` starts without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PREEMPTED_EXIT_CODE": "mlcost_pl.preemption.restart",
    "PreemptedExit": "mlcost_pl.preemption.restart",
    "ResumableSampler": "mlcost_pl.preemption.sampler",
    "wrap_dataloader": "mlcost_pl.preemption.sampler",
    "SignalNotice": "mlcost_pl.preemption.signals",
    "NoticeWatcher": "mlcost_pl.preemption.watchers",
    "AWSSpotWatcher": "mlcost_pl.preemption.watchers",
    "GCPPreemptionWatcher": "mlcost_pl.preemption.watchers",
    "AzureScheduledEventsWatcher": "mlcost_pl.preemption.watchers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mlcost_pl.preemption' has no attribute {name!r}; available: {', '.join(__all__)}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
