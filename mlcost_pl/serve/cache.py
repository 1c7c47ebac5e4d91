"""Prediction cache: an in-process LRU bounded by entries, bytes and TTL, and an optional Redis tier shared by
replicas. Pure logic (numpy + the ``redis`` client, imported lazily); the clock is injectable.

Keys are the digest of the *decoded* input tensor (dtype, shape, bytes) plus the model version (the export
manifest's hash): two requests that spell the same tensor differently share an entry, and a new model never
serves an old model's answers. Values are raw little-endian float32 bytes, never pickles.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from mlcost_pl.errors import MissingDependencyError, UserInputError

log = logging.getLogger(__name__)


def tensor_digest(x: np.ndarray, model_version: str) -> str:
    """The cache key of input ``x`` for model ``model_version``: SHA-256 over version, dtype, shape and bytes.

    Example:
        >>> a = np.zeros((1, 8, 8), np.float32)
        >>> tensor_digest(a, "v1") == tensor_digest(a.copy(), "v1") != tensor_digest(a, "v2")
        True
        >>> tensor_digest(a, "v1") == tensor_digest(a.reshape(8, 8), "v1")
        False
    """
    arr = np.ascontiguousarray(x)
    h = hashlib.sha256()
    h.update(model_version.encode())
    h.update(b"\0" + arr.dtype.str.encode() + b"\0" + repr(arr.shape).encode() + b"\0")
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def encode_value(y: np.ndarray) -> bytes:
    """A float32 vector as bytes (what the tiers store)."""
    return np.ascontiguousarray(y, dtype="<f4").tobytes()


def decode_value(data: bytes) -> np.ndarray:
    """The inverse of :func:`encode_value`."""
    return np.frombuffer(data, dtype="<f4")


class LRUCache:
    """In-process LRU of ``key -> bytes``, bounded by entry count and total bytes, with a TTL.

    Args:
        max_entries: most entries kept (``serve.cache.max_entries``).
        max_bytes: most value bytes kept (``serve.cache.max_mb`` x 2**20).
        ttl_s: seconds an entry stays valid (``None``: forever).
        clock: monotonic seconds; injected in tests.

    Raises:
        ValueError: a bad bound, named.

    Example:
        >>> c = LRUCache(max_entries=2, max_bytes=100)
        >>> c.put("a", b"1"); c.put("b", b"2"); c.put("c", b"3")
        >>> c.get("a") is None, c.get("c")
        (True, b'3')
    """

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 << 20, ttl_s: float | None = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise UserInputError(f"serve.cache.max_entries must be >= 1, got {max_entries}")
        if max_bytes < 1:
            raise UserInputError(f"serve.cache.max_mb must be > 0, got {max_bytes} bytes")
        if ttl_s is not None and ttl_s <= 0:
            raise UserInputError(f"serve.cache.ttl_s must be > 0 or null, got {ttl_s}")
        self.max_entries, self.max_bytes, self.ttl_s = int(max_entries), int(max_bytes), ttl_s
        self.clock = clock
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> bytes | None:
        """The value of ``key`` (marking it recently used), or ``None`` when absent or expired."""
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        value, expires = item
        if expires < self.clock():
            self._remove(key)
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: bytes) -> None:
        """Store ``value``; evict least-recently-used entries until both bounds hold. A value larger than
        ``max_bytes`` on its own is not stored."""
        if len(value) > self.max_bytes:
            return
        if key in self._data:
            self._remove(key)
        expires = self.clock() + self.ttl_s if self.ttl_s is not None else float("inf")
        self._data[key] = (value, expires)
        self.bytes += len(value)
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._remove(oldest)
            self.evictions += 1

    def _remove(self, key: str) -> None:
        value, _ = self._data.pop(key)
        self.bytes -= len(value)


class RedisTier:
    """The shared tier: ``GET``/``SET EX`` on a Redis server, failing soft.

    Any Redis error (down, timeout, refused) turns the tier off for ``retry_s`` with one warning; requests then use
    the local tier only. It never raises into a request.

    Args:
        url: ``redis://host:port/db`` (``serve.cache.url``).
        ttl_s: expiry of each entry (``None``: none).
        prefix: key prefix (the model version is already in the key).
        timeout_s: socket timeout of each call.
        retry_s: how long the tier stays off after an error.
        clock: monotonic seconds.
    """

    def __init__(self, url: str, ttl_s: float | None = 600.0, prefix: str = "mlcost:serve:", timeout_s: float = 0.05,
                 retry_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not str(url).startswith(("redis://", "rediss://", "unix://")):
            raise UserInputError(f"serve.cache.url must be a redis://, rediss:// or unix:// URL, got {url!r}")
        try:
            import redis
        except ImportError as err:  # pragma: no cover - redis is a declared dependency
            raise MissingDependencyError("serve.cache.url needs the redis client: pip install redis") from err
        self.url, self.ttl_s, self.prefix, self.retry_s, self.clock = url, ttl_s, prefix, retry_s, clock
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._errors = (redis.RedisError, OSError)
        self._off_until = 0.0
        self.failures = 0

    @property
    def available(self) -> bool:
        """False while the tier is off after an error."""
        return self.clock() >= self._off_until

    def _failed(self, err: BaseException) -> None:
        self.failures += 1
        self._off_until = self.clock() + self.retry_s
        msg = (f"prediction cache: Redis at {self.url} failed ({type(err).__name__}: {err}); using the local tier only "
               f"for {self.retry_s:g} s")
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        try:
            return self._client.get(self.prefix + key)
        except self._errors as err:
            self._failed(err)
            return None

    def put(self, key: str, value: bytes) -> None:
        if not self.available:
            return
        try:
            ex = int(max(1, round(self.ttl_s))) if self.ttl_s is not None else None
            self._client.set(self.prefix + key, value, ex=ex)
        except self._errors as err:
            self._failed(err)


class PredictionCache:
    """The local LRU in front of an optional :class:`RedisTier`; hits from Redis are copied into the LRU.

    Args:
        local: the in-process tier.
        remote: the shared tier, or ``None``.

    Example:
        >>> cache = PredictionCache(LRUCache(max_entries=10))
        >>> key = tensor_digest(np.ones(3, np.float32), "v1")
        >>> cache.get(key) is None
        True
        >>> cache.put(key, np.array([0.5, 1.5], np.float32)); cache.get(key).tolist(), cache.stats()["hits"]
        ([0.5, 1.5], 1)
    """

    def __init__(self, local: LRUCache, remote: RedisTier | None = None) -> None:
        self.local, self.remote = local, remote
        self.remote_hits = 0

    def get(self, key: str) -> np.ndarray | None:
        value = self.local.get(key)
        if value is None and self.remote is not None:
            value = self.remote.get(key)
            if value is not None:
                self.remote_hits += 1
                self.local.put(key, value)
        return None if value is None else decode_value(value)

    def put(self, key: str, y: np.ndarray) -> None:
        value = encode_value(y)
        self.local.put(key, value)
        if self.remote is not None:
            self.remote.put(key, value)

    def stats(self) -> dict[str, Any]:
        hits = self.local.hits + self.remote_hits
        return {"hits": hits, "misses": self.local.misses - self.remote_hits, "entries": len(self.local),
                "bytes": self.local.bytes, "remote_hits": self.remote_hits,
                "remote_failures": self.remote.failures if self.remote else 0}


def build_cache(enabled: bool = True, max_entries: int = 10_000, max_mb: float = 64.0, ttl_s: float | None = 600.0,
                url: str | None = None) -> PredictionCache | None:
    """The cache ``serve.cache.*`` describes, or ``None`` when disabled."""
    if not enabled:
        return None
    if not max_mb > 0:
        raise UserInputError(f"serve.cache.max_mb must be > 0, got {max_mb}")
    local = LRUCache(max_entries=max_entries, max_bytes=int(max_mb * (1 << 20)), ttl_s=ttl_s)
    return PredictionCache(local, RedisTier(url, ttl_s=ttl_s) if url else None)
