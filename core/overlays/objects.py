"""Many geometries with a class each, a spatial index over them, and change notifications.

Detections, cells, contours and annotations can number 100,000 on one slide. A viewer needs three things from
them at interactive speed: the objects inside the visible rectangle, the object under a click, and the outline
coordinates of a selection as flat arrays it can draw without a Python loop per object. So the set keeps, next to
the shapely geometries, the bounding boxes and every outline flattened once into coordinate arrays.

Objects are appended while an analysis runs. An STRtree cannot grow, so the set is a list of immutable chunks,
each with its own tree; small chunks are merged as they accumulate (like a binary counter) up to ``MAX_MERGE``
objects, so an append costs at most one small tree build and a query visits a few dozen trees at most. Readers on
other threads take a ``snapshot()``, which never changes underneath them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import shapely

from ..listeners import Listeners

#: Chunks are merged only while the result stays this small, so an append never rebuilds a big tree.
MAX_MERGE = 4096

#: Colour of objects without a class (index -1).
UNCLASSIFIED_COLOR = (170, 170, 170)

#: Colours given to classes that arrive without one (Tableau-like, distinguishable on pink/blue Pap stains).
DEFAULT_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


@dataclass(frozen=True)
class ObjectsChanged:
    """What changed: objects ``start..stop`` were added (an empty range after ``clear``), inside ``bounds``
    (level-0 x0, y0, x1, y1), or anywhere when ``bounds`` is None."""

    version: int
    start: int
    stop: int
    bounds: tuple[float, float, float, float] | None


class _Chunk:
    """Immutable block of objects: geometries, attributes, flattened outlines and their STRtree."""

    __slots__ = ("n", "geoms", "classes", "scores", "bounds", "is_point", "path_start", "coord_start", "coords",
                 "keys", "tree")

    def __init__(self, geoms, classes, scores, bounds, is_point, path_start, coord_start, coords, keys=None,
                 tree=None):
        self.n = len(geoms)
        self.geoms = geoms
        self.keys = keys if keys is not None else np.full(self.n, None, dtype=object)
        self.classes = classes
        self.scores = scores
        self.bounds = bounds
        self.is_point = is_point
        self.path_start = path_start  # (n + 1,): object i owns paths path_start[i]:path_start[i + 1]
        self.coord_start = coord_start  # (paths + 1,): path p owns coords coord_start[p]:coord_start[p + 1]
        self.coords = coords  # (m, 2) float64, level-0
        self.tree = tree if tree is not None else shapely.STRtree(geoms)
        for array in (classes, scores, bounds, is_point, path_start, coord_start, coords):
            array.setflags(write=False)

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return self.tree.query(shapely.box(x0, y0, x1, y1))

    def paths(self, idx: np.ndarray):
        """Coordinates of the outlines of objects ``idx``: (coords, connect-to-next, owner object per coord)."""
        p = _ranges(self.path_start[idx], self.path_start[idx + 1])
        path_owner = np.repeat(idx, self.path_start[idx + 1] - self.path_start[idx])
        lens = self.coord_start[p + 1] - self.coord_start[p]
        c = _ranges(self.coord_start[p], self.coord_start[p + 1])
        coord_path = np.repeat(np.arange(len(p)), lens)
        connect = np.zeros(len(c), bool)
        if len(c) > 1:
            connect[:-1] = coord_path[:-1] == coord_path[1:]
        return self.coords[c], connect, path_owner[coord_path]

    def segment_counts(self, idx: np.ndarray) -> np.ndarray:
        """Outline segments per object: coordinates minus paths (a closed ring of 5 coordinates has 4)."""
        ps, pe = self.path_start[idx], self.path_start[idx + 1]
        return (self.coord_start[pe] - self.coord_start[ps]) - (pe - ps)


def merge_chunks(a: _Chunk, b: _Chunk) -> _Chunk:
    n_paths_a = len(a.coord_start) - 1
    return _Chunk(
        np.concatenate([a.geoms, b.geoms]),
        np.concatenate([a.classes, b.classes]),
        np.concatenate([a.scores, b.scores]),
        np.concatenate([a.bounds, b.bounds]),
        np.concatenate([a.is_point, b.is_point]),
        np.concatenate([a.path_start, b.path_start[1:] + n_paths_a]),
        np.concatenate([a.coord_start, b.coord_start[1:] + len(a.coords)]),
        np.concatenate([a.coords, b.coords]),
        np.concatenate([a.keys, b.keys]),
    )


class ObjectSnapshot:
    """An unchanging view of an ``ObjectSet`` at one version: safe to read from any thread."""

    def __init__(self, chunks: tuple[_Chunk, ...], class_names: tuple[str, ...], colors: np.ndarray, version: int):
        self.chunks = chunks
        self.offsets = np.concatenate([[0], np.cumsum([c.n for c in chunks])]).astype(np.int64)
        self.class_names = class_names
        self.colors = colors
        self.version = version

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, idx: np.ndarray):
        """Split global indices into (chunk number, local indices) groups, keeping the input order per chunk."""
        idx = np.asarray(idx, np.int64)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            yield int(k), sel, idx[sel] - self.offsets[k]

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Indices (ascending) of the objects whose bounding box meets the level-0 rectangle."""
        found = [c.query(x0, y0, x1, y1) + off for c, off in zip(self.chunks, self.offsets) if c.n]
        if not found:
            return np.zeros(0, np.int64)
        out = np.concatenate(found).astype(np.int64)
        out.sort()
        return out

    def count_in(self, x0: float, y0: float, x1: float, y1: float, limit: int | None = None) -> int:
        """How many objects meet the rectangle; stops early once past ``limit``."""
        total = 0
        for c in self.chunks:
            if c.n:
                total += len(c.query(x0, y0, x1, y1))
                if limit is not None and total > limit:
                    break
        return total

    def _gather(self, idx: np.ndarray, field: str) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        first = getattr(self.chunks[0], field) if self.chunks else np.zeros(0)
        out = np.empty((len(idx),) + first.shape[1:], first.dtype)
        for k, sel, local in self._locate(idx):
            out[sel] = getattr(self.chunks[k], field)[local]
        return out

    def classes_of(self, idx) -> np.ndarray:
        return self._gather(idx, "classes")

    def scores_of(self, idx) -> np.ndarray:
        return self._gather(idx, "scores")

    def bounds_of(self, idx) -> np.ndarray:
        return self._gather(idx, "bounds")

    def is_point(self, idx) -> np.ndarray:
        return self._gather(idx, "is_point")

    def geometries(self, idx) -> np.ndarray:
        return self._gather(idx, "geoms")

    def keys_of(self, idx) -> np.ndarray:
        """The caller's identifiers of objects ``idx`` (e.g. annotation ids), None where none was given."""
        return self._gather(idx, "keys")

    def geometry(self, i: int):
        return self.geometries([i])[0]

    def paths(self, idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outline coordinates of objects ``idx`` as (coords (m, 2), connect (m,), owner (m,)) where ``connect[j]``
        says coordinate j joins j + 1 (polygon rings are closed, points are paths of one coordinate) and
        ``owner`` holds global object indices. Objects appear in the order of ``idx``'s chunks."""
        parts = []
        for k, _, local in self._locate(np.asarray(idx, np.int64)):
            coords, connect, owner = self.chunks[k].paths(local)
            parts.append((coords, connect, owner + self.offsets[k]))
        if not parts:
            return np.zeros((0, 2)), np.zeros(0, bool), np.zeros(0, np.int64)
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))

    def segments(self, idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every outline segment of objects ``idx`` as (start (m, 2), end (m, 2), owner (m,))."""
        coords, connect, owner = self.paths(idx)
        seg = np.nonzero(connect)[0]
        return coords[seg], coords[seg + 1], owner[seg]

    def segment_counts(self, idx) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        out = np.zeros(len(idx), np.int64)
        for k, sel, local in self._locate(idx):
            out[sel] = self.chunks[k].segment_counts(local)
        return out

    def argb(self) -> np.ndarray:
        """Premultiplied opaque ARGB32 per class, with the unclassified colour last (index -1)."""
        rgb = np.vstack([self.colors.reshape(-1, 3), np.array([UNCLASSIFIED_COLOR], np.uint8)]).astype(np.uint32)
        return (0xFF000000 | (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).astype(np.uint32)

    def hit_test(self, x: float, y: float, tolerance: float = 0.0) -> int:
        """The object under level-0 point (x, y): the smallest one containing it, else the nearest within
        ``tolerance`` level-0 pixels; -1 when there is none."""
        cand = self.query(x - tolerance, y - tolerance, x + tolerance, y + tolerance)
        if not len(cand):
            return -1
        geoms = self.geometries(cand)
        dist = shapely.distance(geoms, shapely.Point(x, y))
        inside = dist <= 1e-9
        if inside.any():
            areas = np.where(inside, shapely.area(geoms), np.inf)
            return int(cand[int(np.argmin(areas))])
        best = int(np.argmin(dist))
        return int(cand[best]) if dist[best] <= tolerance else -1


class ObjectSet:
    """A growing collection of classified geometries in level-0 pixels (the model behind a vector layer).

    ``class_names`` and ``colors`` are the class table; objects carry an index into it (-1: unclassified) or a
    class name, which is added to the table when new. Appends and ``clear`` notify subscribers with an
    ``ObjectsChanged``; callbacks run on the thread that changed the set, so a GUI hands them to its own thread.
    """

    def __init__(self, class_names: Sequence[str] = (), colors: Sequence[Sequence[int]] | None = None,
                 name: str = "") -> None:
        self.name = name
        self._names: list[str] = list(class_names)
        if colors is None:
            colors = [DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] for i in range(len(self._names))]
        if len(colors) != len(self._names):
            raise ValueError(f"{len(self._names)} class names but {len(colors)} colours")
        self._colors = np.asarray(colors, np.uint8).reshape(-1, 3)
        self._chunks: list[_Chunk] = []
        self._lock = threading.Lock()
        self._listeners = Listeners()
        self._version = 0
        self._snapshot: ObjectSnapshot | None = None

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    def from_boxes(cls, boxes, classes=None, class_names: Sequence[str] = (), colors=None, scores=None,
                   name: str = "") -> "ObjectSet":
        out = cls(class_names, colors, name)
        out.add_boxes(boxes, classes, scores)
        return out

    @classmethod
    def from_geometries(cls, geoms, classes=None, class_names: Sequence[str] = (), colors=None, scores=None,
                        name: str = "", keys=None) -> "ObjectSet":
        out = cls(class_names, colors, name)
        out.add_geometries(geoms, classes, scores, keys)
        return out

    @classmethod
    def from_annotations(cls, annotations, name: str = "") -> "ObjectSet":
        """Objects of ``core.annotations`` (anything with ``geometry``, ``classification`` (name, colour),
        ``score`` and ``id``) for display; the ids come back through ``keys_of``."""
        names: list[str] = []
        colors: list = []
        geoms, classes, scores, keys = [], [], [], []
        for a in annotations:
            c = a.classification
            if c is not None and c.name not in names:
                names.append(c.name)
                colors.append(tuple(c.color))
            geoms.append(a.geometry)
            classes.append(names.index(c.name) if c is not None else -1)
            scores.append(np.nan if a.score is None else a.score)
            keys.append(a.id)
        out = cls(names, colors, name)
        out.add_geometries(np.array(geoms, dtype=object), np.array(classes, np.int64), scores,
                           np.array(keys, dtype=object))
        return out

    def add_boxes(self, boxes, classes=None, scores=None) -> range:
        """Append axis-aligned boxes given as (n, 4) level-0 ``x, y, w, h``."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        x0, y0 = b[:, 0], b[:, 1]
        x1, y1 = x0 + b[:, 2], y0 + b[:, 3]
        n = len(b)
        ring = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1),
                         np.stack([x0, y1], 1), np.stack([x0, y0], 1)], 1).reshape(-1, 2)
        chunk = _Chunk(
            shapely.box(x0, y0, x1, y1), self._class_indices(classes, n), _scores(scores, n),
            np.stack([np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)], 1),
            np.zeros(n, bool), np.arange(n + 1, dtype=np.int64), np.arange(0, 5 * n + 1, 5, dtype=np.int64),
            np.ascontiguousarray(ring))
        return self._append(chunk)

    def add_geometries(self, geoms, classes=None, scores=None, keys=None) -> range:
        """Append shapely geometries (polygons, multipolygons, points, lines) in level-0 pixels; ``keys`` are the
        caller's identifiers, handed back by ``keys_of`` (hit tests return indices)."""
        if isinstance(geoms, np.ndarray):
            g = geoms.astype(object).reshape(-1)
        else:
            g = np.empty(len(geoms), dtype=object)
            g[:] = list(geoms)
        n = len(g)
        path_start, coord_start, coords = _flatten(g)
        types = shapely.get_type_id(g)
        k = None
        if keys is not None:
            k = np.empty(n, dtype=object)
            k[:] = list(keys)
        chunk = _Chunk(g, self._class_indices(classes, n), _scores(scores, n), shapely.bounds(g),
                       (types == 0) | (types == 4), path_start, coord_start, coords, k)
        return self._append(chunk)

    def clear(self) -> None:
        with self._lock:
            self._chunks = []
            self._version += 1
            self._snapshot = None
            event = ObjectsChanged(self._version, 0, 0, None)
        self._notify(event)

    def _append(self, chunk: _Chunk) -> range:
        if not chunk.n:
            return range(0)
        with self._lock:
            start = sum(c.n for c in self._chunks)
            self._chunks.append(chunk)
            while (len(self._chunks) >= 2 and self._chunks[-2].n <= 2 * self._chunks[-1].n
                   and self._chunks[-2].n + self._chunks[-1].n <= MAX_MERGE):
                b = self._chunks.pop()
                a = self._chunks.pop()
                self._chunks.append(merge_chunks(a, b))
            self._version += 1
            self._snapshot = None
            finite = chunk.bounds[np.isfinite(chunk.bounds).all(1)]
            box = None if not len(finite) else (float(finite[:, 0].min()), float(finite[:, 1].min()),
                                                float(finite[:, 2].max()), float(finite[:, 3].max()))
            event = ObjectsChanged(self._version, start, start + chunk.n, box if box else (0.0, 0.0, 0.0, 0.0))
        self._notify(event)
        return range(start, start + chunk.n)

    def _class_indices(self, classes, n: int) -> np.ndarray:
        if classes is None:
            return np.full(n, -1, np.int16)
        values = np.asarray(classes).reshape(-1)
        if len(values) != n:
            raise ValueError(f"{n} objects but {len(values)} classes")
        if values.dtype.kind in "iu":
            if len(values) and (values.max() >= len(self._names) or values.min() < -1):
                raise ValueError(f"class index out of range: the set has {len(self._names)} classes")
            return values.astype(np.int16)
        out = np.empty(n, np.int16)
        with self._lock:
            for i, name in enumerate(values.tolist()):
                if name is None or name == "":
                    out[i] = -1
                    continue
                if name not in self._names:
                    self._names.append(str(name))
                    color = DEFAULT_PALETTE[(len(self._names) - 1) % len(DEFAULT_PALETTE)]
                    self._colors = np.vstack([self._colors, np.array([color], np.uint8)])
                out[i] = self._names.index(name)
        return out

    def set_class_color(self, name: str, color: Sequence[int]) -> None:
        """Change (or add) a class's colour; subscribers redraw everything."""
        with self._lock:
            if name not in self._names:
                self._names.append(name)
                self._colors = np.vstack([self._colors, np.zeros((1, 3), np.uint8)])
            self._colors = self._colors.copy()
            self._colors[self._names.index(name)] = np.asarray(color, np.uint8)[:3]
            self._version += 1
            self._snapshot = None
            event = ObjectsChanged(self._version, 0, 0, None)
        self._notify(event)

    # ---------------------------------------------------------------------------------------------- reading
    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self._names)

    @property
    def colors(self) -> np.ndarray:
        return self._colors.copy()

    @property
    def version(self) -> int:
        return self._version

    def __len__(self) -> int:
        return sum(c.n for c in self._chunks)

    def snapshot(self) -> ObjectSnapshot:
        with self._lock:
            if self._snapshot is None:
                colors = self._colors.copy()
                colors.setflags(write=False)
                self._snapshot = ObjectSnapshot(tuple(self._chunks), tuple(self._names), colors, self._version)
            return self._snapshot

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return self.snapshot().query(x0, y0, x1, y1)

    def hit_test(self, x: float, y: float, tolerance: float = 0.0) -> int:
        return self.snapshot().hit_test(x, y, tolerance)

    # ------------------------------------------------------------------------------------------ subscribing
    def subscribe(self, callback: Callable[[ObjectsChanged], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes."""
        return self._listeners.subscribe(callback)

    def _notify(self, event: ObjectsChanged) -> None:
        self._listeners.emit(event)


# ------------------------------------------------------------------------------------------------- helpers
def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for every pair, without a Python loop."""
    starts = np.asarray(starts, np.int64)
    lens = np.asarray(stops, np.int64) - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    prefix = np.cumsum(lens) - lens
    return np.arange(total, dtype=np.int64) + np.repeat(starts - prefix, lens)


def _scores(scores, n: int) -> np.ndarray:
    if scores is None:
        return np.full(n, np.nan, np.float32)
    s = np.asarray(scores, np.float32).reshape(-1)
    if len(s) != n:
        raise ValueError(f"{n} objects but {len(s)} scores")
    return s.copy()


def _flatten(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every object's outlines (polygon rings, lines, points) as paths of coordinates grouped by object."""
    n = len(geoms)
    if n == 0:
        return np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros((0, 2))
    parts, part_obj = shapely.get_parts(geoms, return_index=True)
    types = shapely.get_type_id(parts)
    polys = types == 3
    rings, ring_part = shapely.get_rings(parts[polys], return_index=True)
    paths = np.concatenate([rings, parts[~polys]])
    path_obj = np.concatenate([part_obj[polys][ring_part], part_obj[~polys]]).astype(np.int64)
    order = np.argsort(path_obj, kind="stable")
    paths, path_obj = paths[order], path_obj[order]
    coords, coord_path = shapely.get_coordinates(paths, return_index=True)
    coord_start = np.concatenate([[0], np.cumsum(np.bincount(coord_path, minlength=len(paths)))]).astype(np.int64)
    path_start = np.concatenate([[0], np.cumsum(np.bincount(path_obj, minlength=n))]).astype(np.int64)
    return path_start, coord_start, np.ascontiguousarray(coords, np.float64)
