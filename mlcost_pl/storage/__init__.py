"""Storage lifecycle: inventory a bucket, price it per group, simulate lifecycle rules, apply them via the cloud.

Pure Python: importing ``mlcost_pl.storage`` imports neither Lightning nor torch (boto3 and matplotlib load lazily).
``python -m recipes.storage report|plan|apply url=...`` is the command-line adapter.
"""

from mlcost_pl.storage.classify import GROUPS, CheckpointFolder, CheckpointRun, Classification, classify
from mlcost_pl.storage.inventory import Inventory, ObjectInfo, inventory_from, scan
from mlcost_pl.storage.lifecycle import (
    LifecycleRule,
    MergeResult,
    RuleSpec,
    apply_s3,
    check_live_checkpoints,
    check_overlaps,
    expand,
    merge_s3,
    parse_rules,
    read_s3_rules,
    s3_client,
    to_azure,
    to_gcs,
    to_s3,
)
from mlcost_pl.storage.plan import Plan, RuleImpact, plot_cumulative, price_groups, simulate
from mlcost_pl.storage.prices import ProviderPrices, StorageClassPrice, StoragePrices, UnknownStorageClassError

__all__ = [
    "GROUPS",
    "CheckpointFolder",
    "CheckpointRun",
    "Classification",
    "Inventory",
    "LifecycleRule",
    "MergeResult",
    "ObjectInfo",
    "Plan",
    "ProviderPrices",
    "RuleImpact",
    "RuleSpec",
    "StorageClassPrice",
    "StoragePrices",
    "UnknownStorageClassError",
    "apply_s3",
    "check_live_checkpoints",
    "check_overlaps",
    "classify",
    "expand",
    "inventory_from",
    "merge_s3",
    "parse_rules",
    "plot_cumulative",
    "price_groups",
    "read_s3_rules",
    "s3_client",
    "scan",
    "simulate",
    "to_azure",
    "to_gcs",
    "to_s3",
]
