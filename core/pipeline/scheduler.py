"""Which tile to read next: default order, with region requests (the viewer's viewport) jumping the queue."""

from __future__ import annotations

import collections
import threading
from typing import Iterable

import numpy as np


class TileScheduler:
    def __init__(self, order: Iterable[int]):
        self._normal = collections.deque(int(i) for i in order)
        self._pending = set(self._normal)
        self._urgent: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def prioritise(self, indices: Iterable[int]) -> int:
        """Move still-pending tiles to the front, in the given order; returns how many moved."""
        moved = 0
        with self._lock:
            for i in indices:
                i = int(i)
                if i in self._pending:
                    self._urgent.append(i)
                    moved += 1
        return moved

    def take(self) -> int | None:
        with self._lock:
            for queue in (self._urgent, self._normal):
                while queue:
                    i = queue.popleft()
                    if i in self._pending:
                        self._pending.discard(i)
                        return i
            return None


def tiles_in_region(boxes: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Indices of tiles (level-0 ``x, y, w, h`` rows) that intersect the region, nearest its centre first."""
    x, y, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    hit = np.flatnonzero((x < x1) & (x + w > x0) & (y < y1) & (y + h > y0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    dist = np.hypot(x[hit] + w[hit] / 2 - cx, y[hit] + h[hit] / 2 - cy)
    return hit[np.argsort(dist, kind="stable")]
