"""Checkpoint layout, manifests (the commit marker), verification, discovery and retention.

A SpotCheckpoint directory looks like::

    <dirpath>/
      step-000000200-1764418500123/      one checkpoint: <global step>-<unix ms when written>
        checkpoint.ckpt                  torch.save of Lightning's checkpoint dict
        MANIFEST.json                    written LAST: files, sizes, sha256, global step, time, library versions
      progress.json                      newest executed global step (for counting re-done steps after a resume)

A checkpoint without a manifest, or whose files do not match it, is invisible to :func:`find_latest_valid`.
No Lightning import here: the SIGKILL tests drive this module from a bare ``torch`` process.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mlcost_pl.checkpoint.storage import CheckpointStorage
from mlcost_pl.errors import MissingInputError

MANIFEST = "MANIFEST.json"
CKPT_FILE = "checkpoint.ckpt"
PROGRESS = "progress.json"
FORMAT = "mlcost_pl.spot_checkpoint/1"
_NAME_RE = re.compile(r"^step-(\d{9,})-(\d{13,})$")
_last_ms = 0
_name_lock = threading.Lock()


class CheckpointInvalid(Exception):
    """A checkpoint that must not be loaded: uncommitted, truncated or corrupt (the message says which)."""


@dataclass(frozen=True)
class CheckpointRef:
    """A committed, verified checkpoint.

    Attributes:
        name: the checkpoint's folder name (``step-000000200-1764418500123``).
        url: URL (or local path) of the checkpoint folder.
        file_url: URL of the ``checkpoint.ckpt`` to ``torch.load``.
        global_step: the optimizer step it was taken at.
        manifest: the parsed manifest.
    """

    name: str
    url: str
    file_url: str
    global_step: int
    manifest: dict[str, Any] = field(repr=False, compare=False)


def new_checkpoint_name(global_step: int) -> str:
    """A fresh checkpoint name; later calls in this process always sort later."""
    global _last_ms
    with _name_lock:
        ms = max(int(time.time() * 1000), _last_ms + 1)
        _last_ms = ms
    return f"step-{int(global_step):09d}-{ms:013d}"


def parse_name(name: str) -> tuple[int, int] | None:
    """``(unix_ms, global_step)`` (the sort key, newest = largest) of a checkpoint name, or None if not one."""
    m = _NAME_RE.match(name)
    return (int(m.group(2)), int(m.group(1))) if m else None


def library_versions() -> dict[str, str]:
    """Versions recorded in each manifest (without importing Lightning if it is not loaded yet)."""
    import sys

    import torch

    import mlcost_pl

    out = {"python": platform.python_version(), "torch": torch.__version__, "mlcost_pl": mlcost_pl.__version__}
    pl = sys.modules.get("lightning")
    if pl is not None:
        out["lightning"] = getattr(pl, "__version__", "?")
    return out


def sha256_of(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def serialize(state: Any) -> bytes:
    """``torch.save`` into bytes."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def commit_checkpoint(
    storage: CheckpointStorage,
    files: dict[str, bytes],
    global_step: int,
    meta: dict[str, Any] | None = None,
    name: str | None = None,
    on_data_written: Callable[[], None] | None = None,
) -> tuple[CheckpointRef, int]:
    """Write ``files`` into a new checkpoint folder, then its manifest (the commit).

    The newest checkpoint is found by listing the folder (names sort by time), so there is no pointer to update.

    Returns:
        ``(ref, bytes_written)``.
    """
    name = name or new_checkpoint_name(global_step)
    storage.makedirs(name)
    entries = {}
    written = 0
    for rel, data in files.items():
        written += storage.write_atomic(f"{name}/{rel}", data)
        entries[rel] = {"size": len(data), "sha256": sha256_of(data)}
    if on_data_written is not None:
        on_data_written()
    manifest = {
        "format": FORMAT,
        "name": name,
        "global_step": int(global_step),
        "created_unix": time.time(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": entries,
        "versions": library_versions(),
        **(meta or {}),
    }
    blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
    written += storage.write_atomic(f"{name}/{MANIFEST}", blob)
    ref = CheckpointRef(name, storage.url_of(name), storage.url_of(f"{name}/{CKPT_FILE}"), int(global_step), manifest)
    return ref, written


def read_manifest(storage: CheckpointStorage, name: str) -> dict[str, Any]:
    """The parsed manifest of ``name``; ``CheckpointInvalid`` if it is missing or unreadable."""
    try:
        raw = storage.read(f"{name}/{MANIFEST}")
    except FileNotFoundError as err:
        raise CheckpointInvalid(f"{storage.url_of(name)}: uncommitted (no {MANIFEST})") from err
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise CheckpointInvalid(f"{storage.url_of(name)}: unreadable {MANIFEST}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise CheckpointInvalid(f"{storage.url_of(name)}: {MANIFEST} is not a {FORMAT} manifest")
    return manifest


def verify(storage: CheckpointStorage, name: str, keep: str | None = CKPT_FILE) -> tuple[dict[str, Any], bytes | None]:
    """Check every file of checkpoint ``name`` against its manifest (size and sha256).

    Returns:
        ``(manifest, bytes of the file named by keep)`` (so a caller can load what it verified without reading twice).

    Raises:
        CheckpointInvalid: uncommitted, missing file, wrong size or checksum (the message names the URL and the cause).
    """
    manifest = read_manifest(storage, name)
    kept = None
    for rel, info in manifest["files"].items():
        url = storage.url_of(f"{name}/{rel}")
        try:
            data = storage.read(f"{name}/{rel}")
        except FileNotFoundError as err:
            raise CheckpointInvalid(f"{url}: listed in the manifest but missing") from err
        if len(data) != info.get("size"):
            raise CheckpointInvalid(f"{url}: truncated or extended ({len(data)} bytes, manifest says {info.get('size')})")
        if sha256_of(data) != info.get("sha256"):
            raise CheckpointInvalid(f"{url}: sha256 mismatch (corrupt)")
        if rel == keep:
            kept = data
    return manifest, kept


def load_bytes(data: bytes, map_location: Any = "cpu") -> Any:
    """``torch.load`` a checkpoint we wrote and verified (full unpickling: it holds hparams and loop state)."""
    import torch

    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)


def list_checkpoints(storage: CheckpointStorage) -> list[str]:
    """Checkpoint folder names (committed or not), newest first."""
    names = [n for n in storage.listdir("") if parse_name(n)]
    return sorted(names, key=parse_name, reverse=True)


def committed_checkpoints(storage: CheckpointStorage) -> frozenset[str]:
    """Names of the checkpoint folders that hold a manifest (committed; not verified: cheap enough to poll).

    ``python -m mlcost_pl.supervise`` counts a run as progress only when this set gains a name.
    """
    return frozenset(n for n in list_checkpoints(storage) if storage.exists(f"{n}/{MANIFEST}"))


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def iter_valid(
    storage: CheckpointStorage,
    check_load: bool = False,
    on_skip: Callable[[str], None] | None = _warn,
) -> Iterator[tuple[CheckpointRef, bytes]]:
    """Yield ``(ref, checkpoint bytes)`` for checkpoints that verify, newest first; skipped ones go to ``on_skip``."""
    for name in list_checkpoints(storage):
        try:
            manifest, data = verify(storage, name)
            if data is None:
                raise CheckpointInvalid(f"{storage.url_of(name)}: the manifest does not list {CKPT_FILE}")
            if check_load:
                try:
                    load_bytes(data)
                except Exception as err:  # noqa: BLE001 - any unpickling failure makes it unusable
                    raise CheckpointInvalid(f"{storage.url_of(name)}: does not load: {err}") from err
        except CheckpointInvalid as err:
            if on_skip is not None:
                on_skip(f"skipping checkpoint {err}")
            continue
        step = int(manifest.get("global_step", parse_name(name)[1]))
        yield CheckpointRef(name, storage.url_of(name), storage.url_of(f"{name}/{CKPT_FILE}"), step, manifest), data


def find_latest_valid(
    url: str | CheckpointStorage,
    storage_options: dict[str, Any] | None = None,
    check_load: bool = False,
    on_skip: Callable[[str], None] | None = _warn,
) -> CheckpointRef | None:
    """The newest checkpoint under ``url`` that is committed and matches its manifest, or None.

    Newer checkpoints that fail verification are skipped with a warning naming them.

    Example:
        >>> find_latest_valid("memory://doc-empty") is None
        True
    """
    storage = url if isinstance(url, CheckpointStorage) else CheckpointStorage(url, storage_options)
    for ref, _ in iter_valid(storage, check_load=check_load, on_skip=on_skip):
        return ref
    return None


def apply_retention(storage: CheckpointStorage, keep_last: int, newest: str) -> list[str]:
    """Delete checkpoints older than the ``keep_last`` newest committed ones, counting from ``newest`` (just committed).

    Only folders named like checkpoints are touched, and nothing that sorts after ``newest``. The manifest goes first so
    a half-deleted checkpoint is never mistaken for a committed one. Returns the deleted names.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    key = parse_name(newest)
    if key is None:
        raise ValueError(f"newest={newest!r} is not a checkpoint name")
    older = [n for n in list_checkpoints(storage) if parse_name(n) <= key]
    committed = [n for n in older if storage.exists(f"{n}/{MANIFEST}")]
    if len(committed) < keep_last:
        return []
    cutoff = parse_name(committed[keep_last - 1])
    doomed = [n for n in older if parse_name(n) < cutoff]
    for name in doomed:
        storage.remove(f"{name}/{MANIFEST}")
        storage.remove_tree(name)
    return doomed


def write_progress(storage: CheckpointStorage, global_step: int, lost_steps_total: int) -> None:
    """Record the newest executed step (and the re-done-steps total so far) for the next attempt."""
    blob = json.dumps({"global_step": int(global_step), "lost_steps_total": int(lost_steps_total), "time": time.time()})
    storage.write_atomic(PROGRESS, blob.encode())


def read_progress(storage: CheckpointStorage) -> dict[str, Any]:
    """The progress marker, or ``{}`` when there is none (or it is unreadable)."""
    try:
        data = json.loads(storage.read(PROGRESS))
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def resolve_checkpoint(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """The path/URL of a verified checkpoint file to ``torch.load``.

    Args:
        url: a ``.ckpt`` file, one SpotCheckpoint checkpoint folder, or a SpotCheckpoint directory (newest valid wins).
        storage_options: fsspec options for ``url``.

    Raises:
        FileNotFoundError: nothing loadable there (names the URL).
        CheckpointInvalid: ``url`` is one checkpoint folder and it fails verification.
    """
    storage = CheckpointStorage(url, storage_options)
    fs, path = storage.fs, storage.root
    if fs.isfile(path):
        return storage.url
    if storage.exists(MANIFEST):  # one checkpoint folder
        parent = CheckpointStorage(storage.url.rsplit("/", 1)[0], storage_options)
        name = storage.url.rstrip("/").rsplit("/", 1)[-1]
        verify(parent, name, keep=None)
        return storage.url_of(CKPT_FILE)
    ref = find_latest_valid(storage)
    if ref is None:
        raise MissingInputError(f"{storage.url}: no file and no committed, verified checkpoint there")
    return ref.file_url
