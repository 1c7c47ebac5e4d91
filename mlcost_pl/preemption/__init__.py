"""Preemption: signal and cloud-notice handling, exact mid-epoch resume, restart policy. No Trainer here.

Imported lazily so ``python -m mlcost_pl.supervise`` starts without importing torch.
"""

from __future__ import annotations

from mlcost_pl.utils.lazy import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
