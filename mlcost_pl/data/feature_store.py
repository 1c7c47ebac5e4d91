"""FeatureStore: a frozen module's outputs persisted on any fsspec URL, keyed so a stale feature is never served.

A feature is looked up under two keys:

- the **namespace**: a BLAKE2b digest of everything that decides what the frozen module computes: its weights
  *including buffers* (BatchNorm running statistics; every state_dict entry's name, dtype, shape and bytes), the
  layer the features come from, train/eval mode, the autocast dtype, the torch version and this store's format
  version. Change any of them and the namespace changes, so nothing computed before can be served;
- the **sample key**: a digest of the post-transform input tensor's bytes (dtype and shape included), the same key
  as the in-memory :class:`mlcost_pl.finetune.FeatureCache`, so a random transform simply never hits.

Layout: ``<url>/v<FORMAT_VERSION>/<namespace>/<content digest>.npz`` shards (NumPy ``.npz``, read with
``allow_pickle=False``: nothing is ever unpickled) plus ``meta.json`` (the measured compute seconds per sample).
A shard is named by the digest of its bytes and written atomically (temp file + rename locally, one PUT on object
stores), so two runs writing at once only ever add complete shards; a shard whose bytes do not match its name, or
that cannot be read, is a miss with one warning, never a crash.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from mlcost_pl.finetune.feature_cache import FeatureCache, HitCounter

FORMAT_VERSION = 1
META = "meta.json"


def module_fingerprint(module: nn.Module) -> str:
    """Digest of every ``state_dict`` entry of ``module`` (parameters and buffers): name, dtype, shape, bytes."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def autocast_dtype(device_type: str) -> str:
    """The active autocast dtype on ``device_type`` (``"none"`` when autocast is off)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        enabled = torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    if not enabled:
        return "none"
    return str(torch.get_autocast_dtype(device_type)).replace("torch.", "")


def namespace(weights: str, layer: str, training: bool, autocast: str) -> str:
    """The namespace digest of a (weights, layer, mode, autocast, torch version, format version) combination."""
    key = {"weights": weights, "layer": layer, "training": bool(training), "autocast": autocast,
           "torch": torch.__version__.split("+")[0], "format": FORMAT_VERSION}
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16).hexdigest()


def _to_numpy(t: torch.Tensor) -> tuple[np.ndarray, str]:
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: keep the bits
        return t.view(torch.int16).numpy(), "bfloat16"
    return t.numpy(), str(t.dtype).replace("torch.", "")


def _from_numpy(a: np.ndarray, dtype: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


class FeatureStore(HitCounter):
    """Persist per-sample outputs of frozen modules on a local path or any fsspec URL (``s3://``, ``gs://`` ...).

    Use it through ``FreezeBackbone(cache_features="s3://bucket/features")`` or directly: ``store.bind(module,
    "backbone")`` returns a callable ``(fn, x) -> fn(x)`` that serves stored rows and computes only the others.

    Args:
        url: directory of the store (created if needed).
        storage_options: fsspec options (e.g. ``{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}``).
        shard_rows: new features are written in shards of at most this many rows (and at :meth:`flush`).

    Raises:
        ValueError: an empty URL, ``shard_rows`` < 1, or (from :meth:`check_writable`) a URL without write access.

    Example:
        >>> store = FeatureStore("memory://doc-example/features")
        >>> net = nn.Linear(4, 2).eval()
        >>> cached = store.bind(net, "net")
        >>> x = torch.randn(3, 4)
        >>> with torch.no_grad():
        ...     a = cached(net, x); store.flush(); b = FeatureStore("memory://doc-example/features").bind(net, "net")(net, x)
        >>> torch.equal(a, b)
        True
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, shard_rows: int = 4096) -> None:
        from mlcost_pl.checkpoint.storage import CheckpointStorage

        if not str(url or "").strip():
            raise ValueError("cache_features: give a local path or fsspec URL for the feature store")
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.url = str(url)
        self.storage = CheckpointStorage(self.url, storage_options)
        self.shard_rows = int(shard_rows)
        self._rows: dict[str, dict[bytes, torch.Tensor]] = {}  # namespace -> key -> feature row (CPU)
        self._pending: dict[str, list[tuple[bytes, torch.Tensor]]] = {}
        self._meta: dict[str, dict[str, float]] = {}
        self.hits = self.misses = 0  # since reset_counters
        self.total_hits = self.total_misses = 0  # since construction
        self.compute_s = 0.0  # seconds spent computing misses (since construction)
        self.saved_s = 0.0  # estimated seconds avoided by hits (since construction)
        self.nbytes = 0
        self.corrupt_shards: list[str] = []

    def clear(self) -> None:
        """Write pending rows and drop the in-memory copy (the store on disk stays)."""
        self.flush()
        self._rows.clear()
        self.nbytes = 0

    def check_writable(self) -> None:
        """Raises ``ValueError`` (one line naming the URL) when the store cannot be written."""
        from mlcost_pl.checkpoint.storage import CheckpointDirError

        try:
            self.storage.check_writable()
        except CheckpointDirError as err:
            raise ValueError(f"cache_features={self.url} is not writable: {str(err).split(': ', 1)[-1]}") from err

    # ------------------------------------------------------------------ lookups
    def bind(self, module: nn.Module, layer: str) -> Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]:
        """A ``(fn, x) -> fn(x)`` memo for ``module``'s outputs, keyed by its current weights (fingerprinted now)."""
        weights = module_fingerprint(module)
        spaces: dict[tuple[bool, str], str] = {}

        def call(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            if not isinstance(x, torch.Tensor) or x.dim() == 0 or len(x) == 0:
                return fn(x)
            mode = (module.training, autocast_dtype(x.device.type))
            if mode not in spaces:
                spaces[mode] = namespace(weights, layer, *mode)
            return self.lookup(spaces[mode], fn, x)

        return call

    def lookup(self, ns: str, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``fn(x)``, serving rows of namespace ``ns`` from the store and computing (then storing) only the others."""
        rows = self._load(ns)
        keys = FeatureCache.keys(x)
        missing = [i for i, k in enumerate(keys) if k not in rows]
        hits = len(keys) - len(missing)
        self.hits += hits
        self.misses += len(missing)
        self.total_hits += hits
        self.total_misses += len(missing)
        per_sample = self._meta.get(ns, {}).get("compute_s_per_sample", 0.0)
        if missing:
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            start = time.perf_counter()
            fresh = fn(x if len(missing) == len(keys) else x.index_select(0, torch.tensor(missing, device=x.device)))
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            seconds = time.perf_counter() - start
            self.compute_s += seconds
            meta = self._meta.setdefault(ns, {"compute_s": 0.0, "samples": 0.0})
            meta["compute_s"] += seconds
            meta["samples"] += len(missing)
            meta["compute_s_per_sample"] = per_sample = meta["compute_s"] / meta["samples"]
            if not isinstance(fresh, torch.Tensor):
                return fresh
            self._add(ns, [keys[i] for i in missing], fresh)
            if len(missing) == len(keys):
                self.saved_s += hits * per_sample
                return fresh
            new = dict(zip(missing, fresh.unbind(0)))
            out = torch.stack([new[i] if i in new else rows[k].to(fresh.device) for i, k in enumerate(keys)])
        else:
            out = torch.stack([rows[k] for k in keys]).to(x.device)
        self.saved_s += hits * per_sample
        return out

    def _add(self, ns: str, keys: list[bytes], out: torch.Tensor) -> None:
        rows = self._rows[ns]
        pending = self._pending.setdefault(ns, [])
        for k, row in zip(keys, out.detach().to("cpu").unbind(0)):
            if k not in rows:
                row = row.clone()
                rows[k] = row
                pending.append((k, row))
                self.nbytes += row.numel() * row.element_size()
        while len(pending) >= self.shard_rows:
            self._write_shard(ns)

    # ------------------------------------------------------------------ persistence
    def _dir(self, ns: str) -> str:
        return f"v{FORMAT_VERSION}/{ns}"

    def _load(self, ns: str) -> dict[bytes, torch.Tensor]:
        if ns in self._rows:
            return self._rows[ns]
        rows: dict[bytes, torch.Tensor] = {}
        for name in self.storage.listdir(self._dir(ns)):
            rel = f"{self._dir(ns)}/{name}"
            if name == META:
                try:
                    self._meta[ns] = {k: float(v) for k, v in json.loads(self.storage.read(rel)).items()}
                except Exception as err:  # noqa: BLE001 - only an estimate: ignore a bad one
                    self._warn(rel, err)
                continue
            if not name.endswith(".npz"):
                continue
            try:
                data = self.storage.read(rel)
                if hashlib.blake2b(data, digest_size=16).hexdigest() != name[: -len(".npz")]:
                    raise ValueError("its bytes do not match its name (truncated or altered)")
                with np.load(io.BytesIO(data), allow_pickle=False) as z:
                    keys, feats, dtype = z["keys"], z["features"], str(z["dtype"])
                if keys.ndim != 2 or len(keys) != len(feats):
                    raise ValueError(f"{len(keys)} keys for {len(feats)} rows")
                t = _from_numpy(feats, dtype)
                for k, row in zip(keys, t.unbind(0)):
                    rows[k.tobytes()] = row
                    self.nbytes += row.numel() * row.element_size()
            except Exception as err:  # noqa: BLE001 - a corrupt shard is a miss, never a crash
                self._warn(rel, err)
        self._rows[ns] = rows
        return rows

    def _warn(self, rel: str, err: BaseException) -> None:
        url = self.storage.url_of(rel)
        self.corrupt_shards.append(url)
        warnings.warn(f"FeatureStore: {url} is unreadable ({type(err).__name__}: {err}); its features are recomputed", stacklevel=3)

    def _write_shard(self, ns: str) -> None:
        queue = self._pending.get(ns, [])
        pending, queue[:] = queue[: self.shard_rows], queue[self.shard_rows :]
        if not queue:
            self._pending.pop(ns, None)
        if not pending:
            return
        feats, dtype = _to_numpy(torch.stack([row for _, row in pending]))
        keys = np.frombuffer(b"".join(k for k, _ in pending), dtype=np.uint8).reshape(len(pending), -1)
        buf = io.BytesIO()
        np.savez(buf, keys=keys, features=feats, dtype=np.array(dtype))
        data = buf.getvalue()
        name = hashlib.blake2b(data, digest_size=16).hexdigest()
        self.storage.write_atomic(f"{self._dir(ns)}/{name}.npz", data)
        if ns in self._meta:
            self.storage.write_atomic(f"{self._dir(ns)}/{META}", json.dumps(self._meta[ns]).encode())

    def flush(self) -> None:
        """Write every pending row (call at epoch end; :meth:`clear` and FreezeBackbone's teardown do)."""
        for ns in list(self._pending):
            while ns in self._pending:
                self._write_shard(ns)
