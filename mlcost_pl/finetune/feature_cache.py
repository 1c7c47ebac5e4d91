"""Compute a frozen module's outputs once per distinct input and serve them from memory afterwards.

While a backbone is frozen (eval mode, no gradients), its output is a pure function of its input. If the training
transform is deterministic, the same images come back every epoch, so the backbone forward pass can be paid once and
the head trained on cached features. Inputs are keyed per sample by a BLAKE2b digest of their bytes, which makes the
cache correct for any DataLoader order and self-checking: a random transform simply never hits, and
:attr:`FeatureCache.hit_rate` shows it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from mlcost_pl.errors import UserInputError


class HitCounter:
    """``hits``/``misses`` counters and their rate, shared by the in-memory cache and the persistent feature store."""

    hits: int
    misses: int

    @property
    def hit_rate(self) -> float:
        """Share of samples served from the cache since the last :meth:`reset_counters`."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def reset_counters(self) -> None:
        self.hits = self.misses = 0


class FeatureCache(HitCounter):
    """A per-sample memo of ``fn(x)`` for a batch function ``fn`` whose output row ``i`` depends only on input row ``i``.

    Args:
        max_bytes: stop adding entries once the cached features take this many bytes (lookups still work).

    Raises:
        ValueError: ``max_bytes`` < 1.

    Example:
        >>> cache = FeatureCache()
        >>> fn = lambda x: x * 2
        >>> x = torch.arange(6.0).view(3, 2)
        >>> torch.equal(cache(fn, x), fn(x)), torch.equal(cache(fn, x), fn(x))
        (True, True)
        >>> cache.hits, cache.misses
        (3, 3)
    """

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        if max_bytes < 1:
            raise UserInputError(f"cache_max_bytes must be >= 1, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._store: dict[bytes, torch.Tensor] = {}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.full = False

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Drop every cached feature (call it as soon as the cached module's weights may change)."""
        self._store.clear()
        self.nbytes = 0
        self.full = False

    @staticmethod
    def keys(x: torch.Tensor) -> list[bytes]:
        """One digest per sample of ``x`` (dtype and shape included, so different tensors never collide by layout)."""
        flat = x.detach().to("cpu").contiguous()
        head = f"{flat.dtype}{tuple(flat.shape[1:])}".encode()
        raw = flat.view(len(flat), -1).view(torch.uint8).numpy() if len(flat) else []
        return [hashlib.blake2b(head + row.tobytes(), digest_size=16).digest() for row in raw]

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``fn(x)``, computing only the rows not cached yet."""
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or len(x) == 0:
            return fn(x)
        keys = self.keys(x)
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if len(missing) == len(keys):
            out = fn(x)
            self._add(keys, out)
            return out
        if missing:
            idx = torch.tensor(missing, device=x.device)
            fresh = fn(x.index_select(0, idx))
            self._add([keys[i] for i in missing], fresh)
            new = dict(zip(missing, fresh.unbind(0)))
            rows = [new[i] if i in new else self._store[k] for i, k in enumerate(keys)]
        else:
            rows = [self._store[k] for k in keys]
        return torch.stack(rows)

    def _add(self, keys: list[bytes], out: torch.Tensor) -> None:
        if self.full or not isinstance(out, torch.Tensor):
            return
        out = out.detach()
        for k, row in zip(keys, out.unbind(0)):
            if self.nbytes + row.numel() * row.element_size() > self.max_bytes:
                self.full = True
                return
            if k not in self._store:
                self._store[k] = row.clone()
                self.nbytes += row.numel() * row.element_size()
