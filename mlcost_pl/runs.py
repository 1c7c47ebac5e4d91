"""Run identity: which folder a run writes to, and whether a folder's checkpoints belong to this run.

A recipe run resumes automatically from the checkpoints in its folder (SpotCheckpoint). That is right only when the
folder holds *the same run*: the same resolved training config. So:

* the folder name comes from the command-line overrides (:func:`run_name_from_overrides`), written so the name is a
  valid Hydra override value (``experiment-digits_fast+trainer.max_epochs-3``: no ``=`` or ``,``), so a run's own
  paths can be pasted into the next command (``ckpt_path=outputs/train/<name>/checkpoints``);
* the config is recorded next to the checkpoints (``RUN.json``), and a later command whose config differs (an edited
  YAML, another ``trainer.max_epochs``) is refused with one line saying how to continue, extend or start fresh
  (:func:`check_run_identity`), instead of silently resuming a different run;
* "train this run longer" is an explicit action: ``extend_to_epochs=N``.

Pure Python (OmegaConf containers in, no torch or Lightning).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from mlcost_pl.errors import UserInputError

IDENTITY_FILE = "RUN.json"
# Keys that do not change what a run trains: where it writes, how it is named or resumed, what it prints.
VOLATILE_KEYS = ("hydra", "paths", "run_name", "ckpt_path", "extend_to_epochs", "test", "trainer.enable_progress_bar")
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


class RunConfigChangedError(UserInputError):
    """A run folder's checkpoints were trained with another config than the one given now."""


def run_name_from_overrides(override_dirname: str | None, max_len: int = 80) -> str:
    """A folder name for a run, derived from its command-line overrides; a valid Hydra override value.

    Hydra builds ``override_dirname`` with ``-`` between key and value and ``+`` between overrides
    (``configs/hydra/default.yaml``); any other character outside ``[A-Za-z0-9_.+-]`` becomes ``_``. The same
    overrides give the same name; no overrides give ``default``; long names end in a hash.

    Examples:
        >>> run_name_from_overrides("")
        'default'
        >>> run_name_from_overrides("experiment-digits_fast+trainer.max_epochs-3")
        'experiment-digits_fast+trainer.max_epochs-3'
        >>> run_name_from_overrides("data.root-/data/pets")
        'data.root-_data_pets'
    """
    if not override_dirname:
        return "default"
    name = _SAFE.sub("_", override_dirname)
    if len(name) > max_len:
        digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
        name = f"{name[: max_len - 11]}-{digest}"
    return name


def _drop(config: dict[str, Any], dotted: str) -> None:
    node: Any = config
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def config_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config (a plain nested dict) that defines what is trained: ``config`` minus :data:`VOLATILE_KEYS`.

    Pass the *unresolved* container (``OmegaConf.to_container(cfg, resolve=False)``) so moving ``outputs/`` (paths)
    does not change the identity, while any value written in a YAML or an override does.
    """
    out = json.loads(json.dumps(dict(config), default=str))
    for key in VOLATILE_KEYS:
        _drop(out, key)
    return out


def identity_hash(identity: Mapping[str, Any]) -> str:
    """A short, stable hash of :func:`config_identity`'s result."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` lines for every leaf that differs between two nested dicts.

    Examples:
        >>> config_diff({"trainer": {"max_epochs": 8}}, {"trainer": {"max_epochs": 2}})
        ['trainer.max_epochs: 8 -> 2']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{sub}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{sub}: {old[key]!r} -> (absent)")
            else:
                out.extend(config_diff(old[key], new[key], sub))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def _has_committed_checkpoint(storage: Any) -> bool:
    from mlcost_pl.checkpoint.manifest import MANIFEST, list_checkpoints

    return any(storage.exists(f"{name}/{MANIFEST}") for name in list_checkpoints(storage))


def check_run_identity(
    checkpoint_dir: str,
    config: Mapping[str, Any],
    *,
    run_name: str = "",
    extend_to_epochs: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Make sure the checkpoints in ``checkpoint_dir`` belong to the run described by ``config``, then record it.

    * no committed checkpoint there yet: record ``config`` (``RUN.json``) and go on (a fresh run);
    * checkpoints of the same config: go on (the run resumes);
    * ``extend_to_epochs=N`` and the only difference is ``trainer.max_epochs`` (``config`` carries ``N``, which must
      exceed the recorded value): record the new length and go on (the run is extended);
    * anything else: refuse.

    Args:
        checkpoint_dir: the run's checkpoint folder (local path or fsspec URL).
        config: the run's config as a plain nested dict (see :func:`config_identity`).
        run_name: named in the error message.
        extend_to_epochs: the ``extend_to_epochs=`` the user asked for, if any.
        storage_options: fsspec options for a remote ``checkpoint_dir``.

    Returns:
        The identity hash of ``config``.

    Raises:
        RunConfigChangedError: the folder holds checkpoints of another config (one line: what differs, and the
            commands that continue it, extend it, or start fresh).
        ValueError: ``extend_to_epochs`` does not exceed the recorded ``trainer.max_epochs``, or there is no
            checkpoint to extend.
    """
    from mlcost_pl.checkpoint.storage import CheckpointStorage

    identity = config_identity(config)
    digest = identity_hash(identity)
    storage = CheckpointStorage(str(checkpoint_dir), dict(storage_options or {}))
    record = {"config_hash": digest, "run_name": run_name, "config": identity}
    previous = None
    if storage.exists(IDENTITY_FILE) and _has_committed_checkpoint(storage):
        previous = json.loads(storage.read(IDENTITY_FILE))
    if extend_to_epochs is not None and not _has_committed_checkpoint(storage):
        raise UserInputError(f"extend_to_epochs={extend_to_epochs}: {storage.url} holds no checkpoint of run "
                         f"{run_name or '<this run>'} to extend; run its command without extend_to_epochs first")
    if previous is not None and previous.get("config_hash") != digest:
        old = previous.get("config") or {}
        diff = config_diff(old, identity)
        old_epochs = (old.get("trainer") or {}).get("max_epochs")
        only_epochs = all(line.startswith("trainer.max_epochs:") for line in diff)
        if extend_to_epochs is not None and only_epochs:
            if isinstance(old_epochs, int) and extend_to_epochs <= old_epochs:
                raise UserInputError(f"extend_to_epochs={extend_to_epochs} must exceed the run's trainer.max_epochs={old_epochs}")
        else:
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            name = run_name or "<this run>"
            raise RunConfigChangedError(
                f"run {name}: {storage.url} holds checkpoints of a different config ({shown}). To continue that run, "
                f"repeat its own command; to train it longer, add extend_to_epochs=N; to start fresh, pass "
                f"run_name=<new name> (or delete the folder)"
            )
    if previous is None or previous.get("config_hash") != digest:
        storage.write_atomic(IDENTITY_FILE, json.dumps(record, indent=1, sort_keys=True, default=str).encode())
    return digest
