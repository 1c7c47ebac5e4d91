"""Group an inventory by what mlcost_pl wrote there: SpotCheckpoint folders, exports, datasets, feature-store shards,
logs, ``temporary/``, other.

The layouts recognised:

- **SpotCheckpoint** (:mod:`mlcost_pl.checkpoint.manifest`): ``<dir>/step-<step>-<unix ms>/`` folders, committed when
  their ``MANIFEST.json`` exists, plus ``<dir>/progress.json``. Per checkpoint directory (a *run*)
  the ``keep_last`` newest committed folders are ``checkpoint_kept``, older committed ones ``checkpoint_old``, folders
  without a manifest ``checkpoint_uncommitted``. A run is *live* when something in it changed in the last
  ``live_days`` days.
- **export** (:mod:`mlcost_pl.export.exporter`): a folder holding ``manifest.json``, ``report.json`` and an ``*.onnx``.
- **dataset**: a folder holding litdata's ``index.json`` (an optimized, streamable dataset) and everything under it,
  and the folder above it when that one holds a ``manifest.json`` (``mlcost_pl.data.optimize`` writes one split per
  sub-folder and its manifest at the root); **features** when that folder (or one above it) is named ``features``.
- **features**: the feature store's ``v<N>/<namespace digest>/<content digest>.npz`` shards and their ``meta.json``
  (:mod:`mlcost_pl.data.feature_store`).
- **logs**: CSV/TensorBoard/Hydra logs, ``*.log`` files, cost ledgers.
- **temporary**: anything under a folder named ``temporary``.

Pure Python: no Lightning, no torch (checkpoint names are parsed, never loaded; committed = manifest present).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlcost_pl.errors import UserInputError
from mlcost_pl.storage.inventory import DAY_S, Inventory, ObjectInfo

# The on-disk names of mlcost_pl.checkpoint.manifest, repeated (a test keeps them equal) because importing that
# package imports torch, and a storage report must start in a fraction of a second.
MANIFEST, PROGRESS = "MANIFEST.json", "progress.json"
_CHECKPOINT_RE = re.compile(r"^step-(\d{9,})-(\d{13,})$")
# mlcost_pl.data.feature_store: <url>/v<format>/<namespace>/<digest>.npz and <url>/v<format>/<namespace>/meta.json.
_FEATURE_SHARD_RE = re.compile(r"(^|/)v\d+/[0-9a-f]{32}/([0-9a-f]{32}\.npz|meta\.json)$")

GROUPS = ("checkpoint_kept", "checkpoint_old", "checkpoint_uncommitted", "export", "dataset", "features", "logs", "temporary",
          "other")
EXPORT_FILES = ("manifest.json", "report.json")
DATASET_INDEX = "index.json"
DATASET_MANIFEST = "manifest.json"
FEATURES_DIR = "features"
TEMPORARY_DIR = "temporary"
LOG_DIRS = frozenset({"csv", "tensorboard", "logs", "lightning_logs", ".hydra", "wandb", "mlruns"})
LOG_SUFFIXES = (".log", ".out", ".err")
LOG_NAMES = frozenset({"metrics.csv", "hparams.yaml", "cost_ledger.sqlite", "cost_ledger.jsonl"})


@dataclass
class CheckpointFolder:
    """One ``step-*`` folder of a SpotCheckpoint directory.

    Attributes:
        name: the folder name.
        prefix: its key prefix relative to the scanned URL, ending in ``/``.
        committed: its ``MANIFEST.json`` exists.
        group: ``checkpoint_kept``, ``checkpoint_old`` or ``checkpoint_uncommitted``.
        newest_committed: it is the newest committed checkpoint of its run.
        objects: how many objects it holds.
        bytes: how many bytes it holds.
    """

    name: str
    prefix: str
    committed: bool
    group: str = "checkpoint_kept"
    newest_committed: bool = False
    objects: int = 0
    bytes: int = 0


@dataclass
class CheckpointRun:
    """One SpotCheckpoint directory (``dirpath``) found in the inventory.

    Attributes:
        prefix: its key prefix relative to the scanned URL (``""`` or ending in ``/``).
        folders: its checkpoint folders, newest first.
        live: something in it changed within ``live_days``.
        last_modified: the newest modification time of anything in it (unix seconds).
    """

    prefix: str
    folders: list[CheckpointFolder] = field(default_factory=list)
    live: bool = False
    last_modified: float = 0.0

    @property
    def newest_committed(self) -> CheckpointFolder | None:
        """The newest committed checkpoint folder, None when there is none."""
        return next((f for f in self.folders if f.committed), None)


@dataclass
class Classification:
    """Every object's group, and the SpotCheckpoint runs found.

    Attributes:
        inventory: the classified inventory.
        groups: ``{object key: group}``.
        runs: the SpotCheckpoint directories found.
        keep_last: the ``keep_last`` the checkpoint groups were decided with.
    """

    inventory: Inventory
    groups: dict[str, str]
    runs: list[CheckpointRun]
    keep_last: int

    def objects_in(self, group: str) -> list[ObjectInfo]:
        """The objects of ``group``."""
        return [o for o in self.inventory.objects if self.groups[o.key] == group]

    def folder_of(self, key: str) -> tuple[CheckpointRun, CheckpointFolder] | None:
        """The run and checkpoint folder holding object ``key``, or None."""
        for run in self.runs:
            for folder in run.folders:
                if key.startswith(folder.prefix):
                    return run, folder
        return None


def parse_name(name: str) -> tuple[int, int] | None:
    """``(unix ms, global step)`` of a SpotCheckpoint folder name (newest = largest), None if it is not one."""
    m = _CHECKPOINT_RE.match(name)
    return (int(m.group(2)), int(m.group(1))) if m else None


def _dir(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/" if "/" in key else ""


def _checkpoint_split(key: str) -> tuple[str, str] | None:
    """``(run prefix, folder name)`` when ``key`` lies inside a ``step-*`` folder."""
    parts = key.split("/")
    for i, part in enumerate(parts[:-1]):
        if parse_name(part):
            return "".join(f"{p}/" for p in parts[:i]), part
    return None


def _is_log(key: str) -> bool:
    parts = key.split("/")
    name = parts[-1]
    return (any(p in LOG_DIRS for p in parts[:-1]) or name in LOG_NAMES or name.endswith(LOG_SUFFIXES)
            or name.startswith("events.out.tfevents"))


def _owner(key: str, roots: Mapping[str, str]) -> str | None:
    """The group of the deepest folder of ``roots`` that holds ``key``."""
    best = None
    for prefix, group in roots.items():
        if key.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, group)
    return best[1] if best else None


def classify(inventory: Inventory, keep_last: int = 3, live_days: float = 7.0) -> Classification:
    """Group every object of ``inventory`` (see the module docstring for the layouts).

    Args:
        inventory: from :func:`mlcost_pl.storage.inventory.scan`.
        keep_last: the SpotCheckpoint ``keep_last`` of the runs (committed checkpoints kept per run).
        live_days: a run with anything modified within this many days is live.

    Raises:
        ValueError: ``keep_last < 1`` or ``live_days < 0`` (names the argument).
    """
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise UserInputError(f"keep_last must be an integer >= 1, got {keep_last!r}")
    if isinstance(live_days, bool) or not isinstance(live_days, (int, float)) or live_days < 0:
        raise UserInputError(f"live_days must be a number of days >= 0, got {live_days!r}")
    keys = {o.key for o in inventory.objects}
    folders: dict[tuple[str, str], CheckpointFolder] = {}
    runs: dict[str, CheckpointRun] = {}
    for obj in inventory.objects:
        split = _checkpoint_split(obj.key)
        if split is None:
            continue
        run_prefix, name = split
        run = runs.setdefault(run_prefix, CheckpointRun(run_prefix))
        prefix = f"{run_prefix}{name}/"
        folder = folders.get((run_prefix, name))
        if folder is None:
            folder = folders[(run_prefix, name)] = CheckpointFolder(name, prefix, committed=f"{prefix}{MANIFEST}" in keys)
            run.folders.append(folder)
        folder.objects += 1
        folder.bytes += obj.size
        run.last_modified = max(run.last_modified, obj.modified)
    for run in runs.values():
        run.folders.sort(key=lambda f: parse_name(f.name), reverse=True)
        committed = [f for f in run.folders if f.committed]
        for i, folder in enumerate(committed):
            folder.group = "checkpoint_kept" if i < keep_last else "checkpoint_old"
        for folder in run.folders:
            if not folder.committed:
                folder.group = "checkpoint_uncommitted"
        if committed:
            committed[0].newest_committed = True
        match = next((o for o in inventory.objects if o.key == f"{run.prefix}{PROGRESS}"), None)
        if match is not None:
            run.last_modified = max(run.last_modified, match.modified)
        run.live = (inventory.now - run.last_modified) <= live_days * DAY_S

    roots: dict[str, str] = {}
    by_dir: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        by_dir[_dir(key)].add(key.rsplit("/", 1)[-1])
    for folder_prefix, names in by_dir.items():
        if all(n in names for n in EXPORT_FILES) and any(n.endswith(".onnx") for n in names):
            roots[folder_prefix] = "export"
        elif DATASET_INDEX in names:
            parts = folder_prefix.rstrip("/").split("/")
            group = "features" if FEATURES_DIR in parts else "dataset"
            roots[folder_prefix] = group
            parent = _dir(folder_prefix.rstrip("/"))
            if folder_prefix and DATASET_MANIFEST in by_dir.get(parent, ()):
                roots[parent] = group

    groups: dict[str, str] = {}
    for obj in inventory.objects:
        split = _checkpoint_split(obj.key)
        if split is not None:
            groups[obj.key] = folders[split].group
        elif _dir(obj.key) in runs and obj.key.rsplit("/", 1)[-1] == PROGRESS:
            groups[obj.key] = "checkpoint_kept"
        elif _FEATURE_SHARD_RE.search(obj.key):
            groups[obj.key] = "features"
        elif (owner := _owner(obj.key, roots)) is not None:
            groups[obj.key] = owner
        elif TEMPORARY_DIR in obj.key.split("/")[:-1]:
            groups[obj.key] = "temporary"
        elif _is_log(obj.key):
            groups[obj.key] = "logs"
        else:
            groups[obj.key] = "other"
    ordered = sorted(runs.values(), key=lambda r: r.prefix)
    return Classification(inventory, groups, ordered, keep_last)
