"""Cost accounting: price catalog, cost meter, run ledger, anomaly checks, webhooks.

Pure Python: importing ``mlcost_pl.cost`` imports neither Lightning nor torch. ``mlcost_pl.callbacks.CostMonitor``
is the Lightning adapter.
"""

from mlcost_pl.cost.anomaly import Anomaly, Baseline, baseline, check, compare_with_similar
from mlcost_pl.cost.catalog import InstancePrice, PriceCatalog, UnknownInstanceError, resolve_instance
from mlcost_pl.cost.ledger import Ledger, new_run_id, open_ledger
from mlcost_pl.cost.meter import CostMeter, CostWindow, instances_needed
from mlcost_pl.cost.webhook import post_json

__all__ = [
    "Anomaly",
    "Baseline",
    "CostMeter",
    "CostWindow",
    "InstancePrice",
    "Ledger",
    "PriceCatalog",
    "UnknownInstanceError",
    "baseline",
    "check",
    "compare_with_similar",
    "instances_needed",
    "new_run_id",
    "open_ledger",
    "post_json",
    "resolve_instance",
]
