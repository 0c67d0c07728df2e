"""Byte-bounded LRU tile cache: eviction order, counters, thread safety, default size."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.slides import TileCache, default_cache_bytes
from core.slides.memory import physical_memory_bytes


def _tile(value: int, nbytes: int = 1000) -> np.ndarray:
    return np.full(nbytes, value, np.uint8)


def test_lru_eviction_by_bytes():
    cache = TileCache(max_bytes=3000)
    for k in range(3):
        cache.put(k, _tile(k))
    assert len(cache) == 3 and cache.nbytes == 3000
    assert cache.get(0)[0] == 0  # 0 becomes most recent
    cache.put(3, _tile(3))  # evicts 1, the least recently used
    assert 1 not in cache and 0 in cache and 3 in cache
    cache.put(4, _tile(4, 2000))  # needs two slots: evicts 2 and 0
    assert set(k for k in range(5) if k in cache) == {3, 4} and cache.nbytes == 3000
    stats = cache.stats()
    assert (stats.hits, stats.evictions, stats.entries, stats.max_bytes) == (1, 3, 2, 3000)


def test_hits_misses_and_loader():
    cache = TileCache(max_bytes=10_000)
    calls = []

    def load():
        calls.append(1)
        return _tile(7)

    a = cache.get_or_load(("slide", 0, 0, 0), load)
    b = cache.get_or_load(("slide", 0, 0, 0), load)
    assert a is b and len(calls) == 1
    assert cache.get("absent") is None
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (1, 2) and stats.hit_rate == pytest.approx(1 / 3)


def test_cached_arrays_are_read_only_and_oversize_not_kept():
    cache = TileCache(max_bytes=500)
    arr = cache.put("big", _tile(1, 1000))
    assert "big" not in cache and cache.nbytes == 0 and arr.shape == (1000,)
    small = cache.put("small", _tile(2, 100))
    with pytest.raises(ValueError):
        small[0] = 5
    cache.put("small", _tile(3, 200))  # replacing an entry updates the byte count
    assert cache.nbytes == 200
    cache.put("raw", b"x" * 50)
    assert cache.nbytes == 250
    with pytest.raises(TypeError):
        cache.put("obj", object())
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_thread_safety_under_contention():
    cache = TileCache(max_bytes=50 * 1000)
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(2000):
                key = int(rng.integers(0, 200))
                got = cache.get_or_load(key, lambda k=key: _tile(k % 256))
                assert got[0] == key % 256
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert not errors
    assert stats.nbytes <= 50 * 1000 and stats.entries <= 50
    assert stats.hits + stats.misses == 8 * 2000


def test_default_size_is_a_share_of_memory():
    total = physical_memory_bytes()
    assert total > 2**28
    assert default_cache_bytes() == max(64 * 2**20, int(total * 0.125))
    assert TileCache().max_bytes == default_cache_bytes()
    assert default_cache_bytes(0.5) > default_cache_bytes(0.1)
