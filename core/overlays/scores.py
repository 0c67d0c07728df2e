"""Per-tile values over a slide (tile scores, class probabilities, ABMIL attention): the model of a heat map.

Analysis tiles lie on a regular grid (``TileGrid``), so the map is drawn as one small image with a pixel per grid
cell, stretched over the slide: a 100,000-pixel slide at 448 level-0 pixels per tile is a 224 x 224 image,
re-coloured in microseconds when a tile's value arrives. Unknown values (tiles not analysed yet) are NaN and
transparent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from ..listeners import Listeners


@dataclass(frozen=True)
class GridPlacement:
    """Where the grid image lies: its top-left in level-0 pixels and the level-0 size of one cell."""

    x0: float
    y0: float
    cell_w: float
    cell_h: float
    cols: int
    rows: int


class TileScores:
    """Values for level-0 boxes ``(x, y, w, h)``, filled in as tiles finish.

    ``subscribe(callback)`` gets ``callback(bounds)`` with the level-0 rectangle (x0, y0, x1, y1) that changed,
    or None for everything; it runs on the thread that set the values.
    """

    def __init__(self, boxes, values=None, name: str = "", label: str = "score") -> None:
        self.boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        self.boxes.setflags(write=False)
        n = len(self.boxes)
        self.values = np.full(n, np.nan, np.float32) if values is None else np.asarray(values, np.float32).copy()
        if self.values.shape != (n,):
            raise ValueError(f"{n} boxes but values of shape {self.values.shape}")
        self.name = name
        self.label = label
        self._lock = threading.Lock()
        self._listeners = Listeners()
        self.version = 0
        self.placement, self._cells = _grid(self.boxes)

    def __len__(self) -> int:
        return len(self.boxes)

    def set_values(self, indices, values) -> None:
        idx = np.asarray(indices, np.int64).reshape(-1)
        with self._lock:
            self.values[idx] = np.asarray(values, np.float32).reshape(-1)
            self.version += 1
        b = self.boxes[idx]
        self._notify(None if not len(b) else (float(b[:, 0].min()), float(b[:, 1].min()),
                                              float((b[:, 0] + b[:, 2]).max()), float((b[:, 1] + b[:, 3]).max())))

    def set_all(self, values) -> None:
        with self._lock:
            self.values[:] = np.asarray(values, np.float32).reshape(-1)
            self.version += 1
        self._notify(None)

    def value_range(self) -> tuple[float, float]:
        finite = self.values[np.isfinite(self.values)]
        if not len(finite):
            return 0.0, 1.0
        return float(finite.min()), float(finite.max())

    def grid_values(self) -> np.ndarray:
        """(rows, cols) float32 of the values laid on the grid: where tiles overlap, the mean of those with a
        value; NaN where no tile has one (yet)."""
        p = self.placement
        total = np.zeros((p.rows, p.cols), np.float64)
        count = np.zeros((p.rows, p.cols), np.int32)
        cols, rows, span_x, span_y = self._cells
        with self._lock:
            values = self.values.copy()
        known = np.isfinite(values)
        cols, rows, values = cols[known], rows[known], values[known]
        for dy in range(span_y):
            for dx in range(span_x):
                r, c = rows + dy, cols + dx
                ok = (r < p.rows) & (c < p.cols)
                np.add.at(total, (r[ok], c[ok]), values[ok])
                np.add.at(count, (r[ok], c[ok]), 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)

    def value_at(self, x: float, y: float) -> float:
        """The value of the last tile containing level-0 point (x, y); NaN when none."""
        b = self.boxes
        hit = np.nonzero((b[:, 0] <= x) & (x < b[:, 0] + b[:, 2]) & (b[:, 1] <= y) & (y < b[:, 1] + b[:, 3]))[0]
        return float(self.values[hit[-1]]) if len(hit) else float("nan")

    def subscribe(self, callback: Callable) -> Callable[[], None]:
        """Call ``callback(bounds)`` after every change; returns a function that unsubscribes."""
        return self._listeners.subscribe(callback)

    def _notify(self, bounds) -> None:
        self._listeners.emit(bounds)


def _grid(boxes: np.ndarray) -> tuple[GridPlacement, tuple[np.ndarray, np.ndarray, int, int]]:
    """The coarsest regular grid the boxes sit on: the cell is the smallest step between distinct positions
    (the stride, which is smaller than the tile when tiles overlap), capped by the tile size."""
    if not len(boxes):
        return GridPlacement(0.0, 0.0, 1.0, 1.0, 0, 0), (np.zeros(0, np.int64), np.zeros(0, np.int64), 1, 1)
    x, y, w, h = boxes.T
    cell_w = _step(x, float(np.median(w)))
    cell_h = _step(y, float(np.median(h)))
    x0, y0 = float(x.min()), float(y.min())
    cols = np.round((x - x0) / cell_w).astype(np.int64)
    rows = np.round((y - y0) / cell_h).astype(np.int64)
    span_x = max(1, int(round(float(np.median(w)) / cell_w)))
    span_y = max(1, int(round(float(np.median(h)) / cell_h)))
    placement = GridPlacement(x0, y0, cell_w, cell_h, int(cols.max()) + span_x, int(rows.max()) + span_y)
    return placement, (cols, rows, span_x, span_y)


def _step(pos: np.ndarray, size: float) -> float:
    u = np.unique(pos)
    if len(u) < 2:
        return max(size, 1.0)
    return float(max(1.0, min(np.diff(u).min(), size)))


@lru_cache(maxsize=16)
def colormap_lut(name: str = "inferno", n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours of a matplotlib colormap (perceptually uniform ones read best as heat maps)."""
    from matplotlib import colormaps

    try:
        cmap = colormaps[name]
    except KeyError as exc:
        from ..errors import ConfigError

        raise ConfigError(f"Unknown colormap {name!r}; use one of matplotlib's, e.g. inferno, viridis, "
                          "magma, coolwarm.") from exc
    lut = (cmap(np.linspace(0.0, 1.0, n))[:, :3] * 255 + 0.5).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def colorize(values: np.ndarray, lut: np.ndarray, vmin: float, vmax: float, alpha: int = 255,
             fade: bool = False) -> np.ndarray:
    """Values -> premultiplied ARGB32 through ``lut``; NaN becomes transparent. With ``fade`` the opacity also
    grows with the value (0 at ``vmin``), so low scores leave the slide visible and only high ones stand out."""
    v = np.asarray(values, np.float64)
    span = vmax - vmin if vmax > vmin else 1.0
    finite = np.isfinite(v)
    t = np.clip(np.where(finite, (v - vmin) / span, 0.0), 0.0, 1.0)
    rgb = lut[np.round(t * (len(lut) - 1)).astype(np.int64)].astype(np.uint32)
    a = np.round(alpha * t**0.6).astype(np.uint32) if fade else np.full(t.shape, alpha, np.uint32)
    rgb = (rgb * a[..., None] + 127) // 255  # premultiply
    argb = (a << 24) | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return np.where(finite, argb, 0).astype(np.uint32)
