"""A byte-bounded, thread-safe LRU cache for decoded tiles.

Viewers re-request the same tiles constantly while panning and zooming; decoding a JPEG tile costs milliseconds,
a dictionary lookup microseconds. The bound is in bytes, not entries, because tiles differ in size (edge tiles,
levels, feature maps); the default is a share of physical memory, as established viewers do.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, TypeVar

from .memory import physical_memory_bytes

T = TypeVar("T")

#: Share of physical memory a cache takes when no size is given (QuPath uses 25% of a heap that is itself a part
#: of memory; an eighth of RAM is the same order and leaves room for models).
DEFAULT_SHARE = 0.125
MIN_DEFAULT_BYTES = 64 * 2**20


def default_cache_bytes(share: float = DEFAULT_SHARE) -> int:
    return max(MIN_DEFAULT_BYTES, int(physical_memory_bytes() * share))


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int
    nbytes: int
    max_bytes: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class TileCache:
    """LRU over arbitrary hashable keys, evicting least recently used entries once ``max_bytes`` is exceeded.

    Values are stored as given; numpy arrays are made read-only on insert because every caller gets the same
    object back and a write would silently change what the next caller sees.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = int(max_bytes) if max_bytes is not None else default_cache_bytes()
        if self.max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self._data: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: Hashable, default=None):
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: T, nbytes: int | None = None) -> T:
        """Insert (or refresh) ``value``; an entry larger than the whole cache is not kept."""
        size = _size_of(value) if nbytes is None else int(nbytes)
        _freeze(value)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            if size > self.max_bytes:
                return value
            self._data[key] = (value, size)
            self._nbytes += size
            while self._nbytes > self.max_bytes and self._data:
                _, (_, evicted) = self._data.popitem(last=False)
                self._nbytes -= evicted
                self.evictions += 1
        return value

    def get_or_load(self, key: Hashable, loader: Callable[[], T]) -> T:
        """The cached value, or ``loader()`` stored and returned. The loader runs outside the lock, so slow reads
        never block other threads; two threads missing the same key at once may both load it (harmless)."""
        sentinel = _MISSING
        value = self.get(key, sentinel)
        if value is not sentinel:
            return value  # type: ignore[return-value]
        return self.put(key, loader())

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._nbytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.hits, self.misses, self.evictions, len(self._data), self._nbytes, self.max_bytes)


_MISSING = object()


def _size_of(value) -> int:
    nbytes = getattr(value, "nbytes", None)
    if nbytes is not None:
        return int(nbytes)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    raise TypeError(f"cannot tell the size of a {type(value).__name__}; pass nbytes=")


def _freeze(value) -> None:
    setflags = getattr(value, "setflags", None)
    if setflags is not None:
        try:
            setflags(write=False)
        except ValueError:
            pass
