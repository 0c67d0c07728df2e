"""A spatial index over many geometries that also takes additions one at a time.

shapely's ``STRtree`` is fast to query but immutable, and rebuilding it for 100,000 objects takes tens of
milliseconds: too slow to do per drawn annotation. So the index is a short list of trees (chunks) plus a small
pending list scanned by brute force. New entries go to the pending list; a query first turns a full pending list
into a chunk, then merges chunks of similar size (the logarithmic method: each entry is rebuilt O(log n) times,
and the number of trees stays O(log n)). A bulk insert (an analysis adding 100,000 cells) becomes one chunk at once.

Deletions are the caller's business: the index returns keys, and the caller drops keys it no longer holds, then
calls ``rebuild`` when dead keys pile up. Keys are non-negative integers (the store's slot numbers).
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely import STRtree

PENDING_LIMIT = 64


class _Chunk:
    __slots__ = ("tree", "keys", "geoms", "bounds")

    def __init__(self, keys: np.ndarray, geoms: np.ndarray, bounds: np.ndarray) -> None:
        self.keys, self.geoms, self.bounds = keys, geoms, bounds
        self.tree = STRtree(geoms)

    def __len__(self) -> int:
        return len(self.keys)


class ChunkedIndex:
    """Integer key -> geometry, queried by rectangle, geometry or distance to a point."""

    def __init__(self, pending_limit: int = PENDING_LIMIT) -> None:
        self._chunks: list[_Chunk] = []
        self._pending_keys: list[int] = []
        self._pending_geoms: list = []
        self._pending_limit = pending_limit

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks) + len(self._pending_keys)

    @property
    def chunk_sizes(self) -> list[int]:
        return [len(c) for c in self._chunks]

    # ------------------------------------------------------------------------------------------- changes
    def insert(self, key: int, geom) -> None:
        self._pending_keys.append(int(key))
        self._pending_geoms.append(geom)

    def insert_many(self, keys, geoms) -> None:
        keys = np.asarray(keys, np.int64)
        if len(keys) <= self._pending_limit:
            self._pending_keys.extend(keys.tolist())
            self._pending_geoms.extend(geoms)
            return
        self._flush()
        geoms = np.asarray(geoms, dtype=object)
        self._chunks.append(_Chunk(keys, geoms, shapely.bounds(geoms)))
        self._merge()

    def rebuild(self, keys, geoms) -> None:
        """Replace everything by one tree over ``keys``/``geoms`` (after many deletions)."""
        self._chunks, self._pending_keys, self._pending_geoms = [], [], []
        if len(keys):
            geoms = np.asarray(geoms, dtype=object)
            self._chunks.append(_Chunk(np.asarray(keys, np.int64), geoms, shapely.bounds(geoms)))

    def _flush(self) -> None:
        if not self._pending_keys:
            return
        geoms = np.empty(len(self._pending_geoms), dtype=object)
        geoms[:] = self._pending_geoms
        self._chunks.append(_Chunk(np.asarray(self._pending_keys, np.int64), geoms, shapely.bounds(geoms)))
        self._pending_keys, self._pending_geoms = [], []
        self._merge()

    def _merge(self) -> None:
        chunks = self._chunks
        while len(chunks) >= 2 and len(chunks[-2]) <= 2 * len(chunks[-1]):
            b, a = chunks.pop(), chunks.pop()
            chunks.append(_Chunk(np.concatenate([a.keys, b.keys]), np.concatenate([a.geoms, b.geoms]),
                                 np.concatenate([a.bounds, b.bounds])))

    def _prepare(self) -> None:
        if len(self._pending_keys) > self._pending_limit:
            self._flush()

    # ------------------------------------------------------------------------------------------- queries
    def query_box(self, x0: float, y0: float, x1: float, y1: float, exact: bool = True) -> np.ndarray:
        """Keys whose geometry intersects the rectangle (with ``exact=False``: whose bounding box does).

        Geometries whose bounding box lies inside the rectangle intersect it for sure, so only the few that
        straddle its edge get the exact test; a whole-slide query over 100,000 cells stays a few milliseconds.
        """
        self._prepare()
        rect = shapely.box(x0, y0, x1, y1)
        out = []
        for chunk in self._chunks:
            idx = chunk.tree.query(rect)
            if exact and len(idx):
                idx = _exact_box(idx, chunk.bounds, chunk.geoms, rect, (x0, y0, x1, y1))
            out.append(chunk.keys[idx])
        if self._pending_keys:
            geoms = _as_array(self._pending_geoms)
            hit = (shapely.intersects(geoms, rect) if exact
                   else _bbox_overlap(shapely.bounds(geoms), (x0, y0, x1, y1)))
            out.append(np.asarray(self._pending_keys, np.int64)[hit])
        return _concat(out)

    def query(self, geom, predicate: str = "intersects") -> np.ndarray:
        """Keys whose geometry satisfies ``predicate`` with ``geom`` (shapely's STRtree predicates)."""
        self._prepare()
        out = [chunk.keys[chunk.tree.query(geom, predicate=predicate)] for chunk in self._chunks]
        if self._pending_keys:
            geoms = _as_array(self._pending_geoms)
            hit = getattr(shapely, predicate)(geoms, geom)
            out.append(np.asarray(self._pending_keys, np.int64)[hit])
        return _concat(out)

    def within_distance(self, x: float, y: float, distance: float) -> tuple[np.ndarray, np.ndarray]:
        """(keys, distances) of geometries at most ``distance`` from the point (0 inside a polygon)."""
        self._prepare()
        point = shapely.Point(x, y)
        keys, dists = [], []
        for chunk in self._chunks:
            idx = chunk.tree.query(point, predicate="dwithin", distance=distance)
            if len(idx):
                keys.append(chunk.keys[idx])
                dists.append(shapely.distance(chunk.geoms[idx], point))
        if self._pending_keys:
            d = shapely.distance(_as_array(self._pending_geoms), point)
            hit = d <= distance
            keys.append(np.asarray(self._pending_keys, np.int64)[hit])
            dists.append(d[hit])
        return _concat(keys), (np.concatenate(dists) if dists else np.empty(0))


def _as_array(geoms: list) -> np.ndarray:
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = geoms
    return arr


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.empty(0, np.int64)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _bbox_overlap(bounds: np.ndarray, rect) -> np.ndarray:
    x0, y0, x1, y1 = rect
    return (bounds[:, 0] <= x1) & (bounds[:, 2] >= x0) & (bounds[:, 1] <= y1) & (bounds[:, 3] >= y0)


def _exact_box(idx: np.ndarray, bounds: np.ndarray, geoms: np.ndarray, rect, r) -> np.ndarray:
    b = bounds[idx]
    inside = (b[:, 0] >= r[0]) & (b[:, 1] >= r[1]) & (b[:, 2] <= r[2]) & (b[:, 3] <= r[3])
    if inside.all():
        return idx
    edge = idx[~inside]
    keep = shapely.intersects(geoms[edge], rect)
    return np.concatenate([idx[inside], edge[keep]])
