"""On-disk cache of batch-size search results, keyed by model signature, device, input shape and precision.

One JSON file; writes go through :func:`mlcost_pl.utils.fs.atomic_write_local` under an
advisory lock, so a reader never sees a torn file and two writers do not lose each other's entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from mlcost_pl.utils.fs import atomic_write_local

DEFAULT_FILE = "batch_size_search.json"


def default_cache_dir() -> Path:
    """``$MLCOST_CACHE_DIR`` or ``~/.cache/mlcost_pl``."""
    return Path(os.environ.get("MLCOST_CACHE_DIR") or Path.home() / ".cache" / "mlcost_pl")


def model_signature(module: nn.Module) -> str:
    """A short hash of the module's class and the names, shapes, dtypes and trainability of its tensors.

    Two instances of the same architecture share a signature whatever their weights; a frozen layer changes it.
    """
    h = hashlib.sha1(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, p in module.named_parameters():
        h.update(f"p:{name}:{tuple(p.shape)}:{p.dtype}:{p.requires_grad};".encode())
    for name, b in module.named_buffers():
        h.update(f"b:{name}:{tuple(b.shape)}:{b.dtype};".encode())
    return h.hexdigest()[:16]


def cache_key(signature: str, device: str, input_shape: Any, precision: str, **extra: Any) -> str:
    """The cache key of a search: a hash of its inputs (``extra`` holds the search settings)."""
    payload = {"model": signature, "device": device, "input": repr(input_shape), "precision": str(precision), **extra}
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class SearchCache:
    """A JSON file mapping cache keys to results.

    Args:
        path: the JSON file, or a folder (``batch_size_search.json`` inside it). ``None``: :func:`default_cache_dir`.

    Example:
        >>> import tempfile
        >>> c = SearchCache(tempfile.mkdtemp())
        >>> c.put("k", {"batch_size": 96}); c.get("k")["batch_size"]
        96
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        p = Path(path) if path is not None else default_cache_dir()
        self.path = p if p.suffix == ".json" else p / DEFAULT_FILE

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):  # unreadable or corrupt: start over rather than fail a training run
            return {}
        return data.get("entries", {}) if isinstance(data, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored result for ``key``, or None."""
        entry = self._read().get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` under ``key`` atomically (other keys are kept)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            entries = self._read()
            entries[key] = value
            atomic_write_local(self.path, json.dumps({"version": 1, "entries": entries}, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def _lock(self):
        try:
            import fcntl
        except ImportError:  # Windows: atomic replace only
            yield
            return
        with open(self.path.with_suffix(".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
