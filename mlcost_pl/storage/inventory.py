"""Scan a bucket, prefix or local folder into an inventory: key, size, last-modified time, storage class.

Works on any fsspec URL (local paths, ``s3://``, ``gs://``, ``az://``, ``memory://``); the storage class is read from
what the store reports (S3 ``StorageClass``, GCS ``storageClass``, Azure ``tier``), None where it reports none.
Pure Python: no Lightning, no torch.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mlcost_pl.errors import MissingInputError, UnreadableInputError, UserInputError
from mlcost_pl.utils.fs import get_fs, protocol_of

DAY_S = 86400.0
_PROTOCOL_PROVIDER = {"s3": "aws", "s3a": "aws", "gs": "gcp", "gcs": "gcp", "az": "azure", "abfs": "azure", "abfss": "azure",
                      "adl": "azure"}
_CLASS_KEYS = ("StorageClass", "storageClass", "storage_class", "tier", "blob_tier", "access_tier")
_TIME_KEYS = ("LastModified", "last_modified", "updated", "mtime", "timeCreated", "created")


@dataclass(frozen=True)
class ObjectInfo:
    """One object (file) of an inventory.

    Attributes:
        key: its path relative to the scanned URL, ``/``-separated (``run-1/checkpoints/step-.../checkpoint.ckpt``).
        size: bytes.
        modified: last-modified time, unix seconds (lifecycle rules count days from it).
        storage_class: the class the store reports, None when it reports none (local folders, memory://).
    """

    key: str
    size: int
    modified: float
    storage_class: str | None = None


@dataclass(frozen=True)
class Inventory:
    """What :func:`scan` found under one URL.

    Attributes:
        url: the scanned URL (or absolute local path).
        provider: the cloud the URL belongs to (``aws``, ``gcp``, ``azure``), None for local/memory folders.
        bucket: the bucket/container name (None for local folders).
        key_prefix: the scanned prefix inside the bucket, ``""`` or ending in ``/``: lifecycle rules need bucket keys.
        objects: the objects, sorted by key.
        now: the time "now" for ages, unix seconds (the scan time unless given).
    """

    url: str
    provider: str | None
    bucket: str | None
    key_prefix: str
    objects: tuple[ObjectInfo, ...]
    now: float

    def age_days(self, obj: ObjectInfo) -> float:
        """Days since ``obj`` was last modified (never negative)."""
        return max(0.0, (self.now - obj.modified) / DAY_S)

    @property
    def total_bytes(self) -> int:
        """Bytes of all objects."""
        return sum(o.size for o in self.objects)

    def with_ages(self, ages: Mapping[str, float]) -> Inventory:
        """A copy whose objects under each key prefix of ``ages`` are ``days`` old (the longest matching prefix wins).

        This is how tests and what-if plans age objects without waiting: ``inv.with_ages({"": 200, "temporary/": 10})``.
        """
        prefixes = sorted(ages, key=len, reverse=True)
        objects = []
        for obj in self.objects:
            match = next((p for p in prefixes if obj.key.startswith(p)), None)
            objects.append(obj if match is None else replace(obj, modified=self.now - float(ages[match]) * DAY_S))
        return replace(self, objects=tuple(objects))


def provider_of(url: str) -> str | None:
    """The cloud of ``url`` from its protocol (``s3://`` -> ``aws``), None for local and other filesystems."""
    return _PROTOCOL_PROVIDER.get(protocol_of(url))


def _unix(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)).timestamp()
    try:
        parsed = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)).timestamp()


def object_from_info(key: str, info: Mapping[str, Any], default_time: float) -> ObjectInfo:
    """An :class:`ObjectInfo` from one fsspec ``info``/``find(detail=True)`` entry (whatever the backend calls the keys)."""
    modified = next((t for t in (_unix(info.get(k)) for k in _TIME_KEYS) if t is not None), default_time)
    storage_class = next((str(info[k]) for k in _CLASS_KEYS if info.get(k)), None)
    size = info.get("size", info.get("Size", 0)) or 0
    return ObjectInfo(key=key, size=int(size), modified=modified, storage_class=storage_class)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover - botocore comes with boto3, a dependency
        pass
    return tuple(errors)


def scan(url: str, storage_options: Mapping[str, Any] | None = None, now: float | None = None) -> Inventory:
    """List every object under ``url`` with its size, age and storage class.

    Args:
        url: a local folder or any fsspec URL (``s3://bucket/prefix``); credentials and endpoints come the usual way
            (environment, ``AWS_ENDPOINT_URL``, ``storage_options``).
        storage_options: passed to fsspec (``{"client_kwargs": {"endpoint_url": ...}}``).
        now: the time ages are counted to (unix seconds; default: now).

    Raises:
        FileNotFoundError: nothing at ``url`` (no such bucket or folder).
        PermissionError: the credentials may not list ``url``.
        ValueError: the store cannot be reached (the message names the URL and the cause).
    """
    if not isinstance(url, str) or not url.strip():
        raise UserInputError(f"url must be a bucket URL or a folder path, got {url!r}")
    fs, root = get_fs(url, **dict(storage_options or {}))
    root = root.rstrip("/")
    now = time.time() if now is None else float(now)
    try:
        found = fs.find(root, detail=True, withdirs=False)
        if not found and not fs.exists(root):
            raise MissingInputError(url)
    except FileNotFoundError:
        raise MissingInputError(f"url={url}: no such bucket or folder") from None
    except PermissionError as err:
        raise UnreadableInputError(f"url={url}: no permission to list it ({_one_line(err)})") from None
    except _store_errors() as err:
        text = _one_line(err)
        if "AccessDenied" in text or "Forbidden" in text or "403" in text:
            raise UnreadableInputError(f"url={url}: no permission to list it ({text})") from None
        raise UserInputError(f"url={url}: cannot reach the store ({type(err).__name__}: {text})") from None
    objects = []
    for path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        key = path[len(root):].lstrip("/") if path.startswith(root) else path
        objects.append(object_from_info(key or path.rsplit("/", 1)[-1], info, now))
    provider = provider_of(url)
    bucket, key_prefix = None, ""
    if provider is not None:
        bucket, _, rest = root.partition("/")
        key_prefix = f"{rest}/" if rest else ""
    shown = fs.unstrip_protocol(root) if provider is not None else root
    return Inventory(shown, provider, bucket, key_prefix, tuple(sorted(objects, key=lambda o: o.key)), now)


def inventory_from(objects: Iterable[ObjectInfo], url: str = "memory://inventory", now: float | None = None,
                   provider: str | None = None) -> Inventory:
    """An inventory built by hand (tests, what-if plans): ``objects`` as given, ``now`` defaults to the clock."""
    return Inventory(url, provider, None, "", tuple(sorted(objects, key=lambda o: o.key)), time.time() if now is None else now)
