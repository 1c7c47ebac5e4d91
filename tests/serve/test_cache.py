"""Prediction cache: the LRU's bounds and TTL with an injected clock, keys, and the Redis tier against a real
redis-server (started on a free port), including Redis going away mid-use."""

from __future__ import annotations

import numpy as np
import pytest

from mlcost_pl.serve.cache import LRUCache, PredictionCache, RedisTier, build_cache, tensor_digest
from tests.helpers.clock import FakeClock


def test_lru_evicts_least_recently_used_by_entries_and_by_bytes():
    c = LRUCache(max_entries=3, max_bytes=10)
    for k in "abc":
        c.put(k, b"xx")
    assert c.get("a") == b"xx"  # a is now the most recent
    c.put("d", b"xx")
    assert c.get("b") is None and c.get("a") == b"xx" and len(c) == 3
    c.put("e", b"xxxxxx")  # 2 + 2 + 6 = 10 bytes: fits, evicts the oldest entry (c) for the entry bound
    assert c.bytes <= 10 and c.get("c") is None and c.get("e") == b"xxxxxx"
    c.put("f", b"x" * 11)  # larger than the whole cache: not stored
    assert c.get("f") is None and c.bytes <= 10 and c.evictions >= 2


def test_lru_entries_expire_after_the_ttl():
    clock = FakeClock(0.0)
    c = LRUCache(max_entries=10, ttl_s=5.0, clock=clock)
    c.put("a", b"1")
    clock.t = 4.9
    assert c.get("a") == b"1"
    clock.t = 5.1
    assert c.get("a") is None and len(c) == 0 and c.bytes == 0


def test_keys_are_the_decoded_tensor_and_the_model_version():
    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    assert tensor_digest(x, "v1") == tensor_digest(np.array(x.tolist(), np.float32), "v1")  # spelling-independent
    assert tensor_digest(x, "v1") != tensor_digest(x, "v2")
    assert tensor_digest(x, "v1") != tensor_digest(x.astype(np.float64), "v1")
    assert tensor_digest(x, "v1") != tensor_digest(x.reshape(8, 8), "v1")


@pytest.mark.parametrize(("kwargs", "match"), [({"max_entries": 0}, "serve.cache.max_entries"),
                                               ({"max_mb": 0}, "serve.cache.max_mb"),
                                               ({"ttl_s": -1}, "serve.cache.ttl_s"),
                                               ({"url": "http://x"}, "serve.cache.url")])
def test_bad_cache_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_cache(**kwargs)


def test_replicas_share_hits_through_redis(redis_url):
    a, b = build_cache(url=redis_url), build_cache(url=redis_url)  # two replicas: separate local tiers
    key = tensor_digest(np.ones((1, 8, 8), np.float32), "v1")
    a.put(key, np.array([1.0, 2.0], np.float32))
    assert b.get(key).tolist() == [1.0, 2.0] and b.stats()["remote_hits"] == 1
    assert b.get(key).tolist() == [1.0, 2.0] and b.stats()["remote_hits"] == 1  # now from b's local tier


def test_redis_going_away_degrades_to_the_local_tier_with_a_warning(redis_server):
    url, proc = redis_server
    cache = PredictionCache(LRUCache(), RedisTier(url, retry_s=60))
    key = tensor_digest(np.zeros(3, np.float32), "v1")
    cache.put(key, np.zeros(2, np.float32))
    proc.terminate()
    proc.wait(timeout=10)
    other = tensor_digest(np.ones(3, np.float32), "v1")
    with pytest.warns(RuntimeWarning, match="Redis at .* failed"):
        assert cache.get(other) is None  # a miss, not an exception
    cache.put(other, np.ones(2, np.float32))  # tier off: no second warning, no exception
    assert cache.get(other).tolist() == [1.0, 1.0] and cache.get(key) is not None
    assert cache.stats()["remote_failures"] == 1 and not cache.remote.available
