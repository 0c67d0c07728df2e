"""Localisation tiles: a partition of the cell-bearing area into cores, each read with a margin around it.

A cell cut by a tile border would be found twice (once per side) or half; instead every tile is read with a margin
at least as wide as a cell reaches from its nucleus, the detector sees whole cells, and a cell is kept only by the
tile whose core contains its nucleus centre. Cores are half-open rectangles that tile the plane without gaps or
overlaps, so each nucleus centre has exactly one owner and tile borders give no duplicates. The margin costs reading
``(core + 2 margin)^2 / core^2`` times the area (1.56x for the defaults), paid once per slide.

Read origins are snapped to the pixel lattice of the pyramid level they come from, so neighbouring tiles see the
same pixels where they overlap and a cell in the overlap is segmented identically from both sides.
"""

from __future__ import annotations

import math

import numpy as np

from ..slides import ForegroundMask, Slide, TileGrid
from .cell import Cell, TileFrame


class LocalisationTiles:
    """Cores of ``core_px`` pixels at ``mpp`` over the slide (foreground only when a mask is given)."""

    def __init__(self, slide: Slide, mpp: float = 0.5, core_px: int = 1024, margin_um: float = 64.0,
                 foreground: ForegroundMask | None = None, background: tuple[float, float, float] | None = None):
        if core_px < 16:
            raise ValueError(f"core_px must be at least 16, got {core_px}")
        self.slide = slide
        self.mpp = float(mpp)
        self.core_px = int(core_px)
        self.scale = (self.mpp / slide.mpp[0], self.mpp / slide.mpp[1])  # level-0 px per tile px
        self.margin_px = int(math.ceil(margin_um / self.mpp))
        self.background = background if background is not None else (
            foreground.background if foreground is not None else None)
        self.grid = TileGrid(slide, self.core_px, self.mpp, 0, foreground)
        bx, by = slide.bounds[0], slide.bounds[1]
        cols, rows = self.grid.cols_rows[:, 0], self.grid.cols_rows[:, 1]
        sx, sy = self.grid.stride0
        x0 = bx + np.round(cols * sx).astype(np.int64)
        y0 = by + np.round(rows * sy).astype(np.int64)
        x1 = bx + np.round((cols + 1) * sx).astype(np.int64)
        y1 = by + np.round((rows + 1) * sy).astype(np.int64)
        #: (N, 4) level-0 x0, y0, x1, y1 of each core: half-open, so cores never share a point.
        self.cores = np.column_stack([x0, y0, x1, y1])
        self.level = slide.level_for_downsample(min(self.scale))

    def __len__(self) -> int:
        return len(self.cores)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) level-0 x, y, w, h of the cores (for region priorities)."""
        c = self.cores
        return np.column_stack([c[:, 0], c[:, 1], c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]])

    def frame(self, index: int) -> tuple[TileFrame, int, int]:
        """Where tile ``index`` is read from (with its margin) and its size in pixels (width, height)."""
        x0, y0, x1, y1 = (int(v) for v in self.cores[index])
        sx, sy = self.scale
        lds = self.slide.level_downsamples[self.level]
        ox = _snap(x0 - self.margin_px * sx, sx, lds)
        oy = _snap(y0 - self.margin_px * sy, sy, lds)
        w = int(math.ceil((x1 - ox) / sx)) + self.margin_px
        h = int(math.ceil((y1 - oy) / sy)) + self.margin_px
        return TileFrame(float(ox), float(oy), (sx, sy), self.mpp, self.background), w, h

    def read(self, index: int) -> tuple[np.ndarray, TileFrame]:
        """The tile's pixels at ``mpp`` (core plus margin) and their frame."""
        frame, w, h = self.frame(index)
        sx, sy = frame.downsample
        rgb = self.slide.read_scaled(frame.x0, frame.y0, w * sx, h * sy, w, h)
        return rgb, frame

    def owns(self, index: int, x, y) -> np.ndarray:
        """Whether level-0 points (x, y) lie in core ``index``."""
        x0, y0, x1, y1 = self.cores[index]
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)

    def owned(self, index: int, cells: list[Cell]) -> list[Cell]:
        """The cells whose nucleus centre lies in core ``index``."""
        if not cells:
            return []
        centres = np.array([c.centre for c in cells])
        keep = self.owns(index, centres[:, 0], centres[:, 1])
        return [c for c, k in zip(cells, keep) if k]


def _snap(v: float, scale: float, level_downsample: float) -> int:
    """Round a read origin down onto a lattice shared by all tiles: multiples of the tile pixel size in level-0
    pixels when that is whole, else of the pyramid level's downsample, else of one level-0 pixel."""
    for step in (scale, level_downsample):
        if abs(step - round(step)) < 1e-6 and round(step) >= 1:
            return int(math.floor(v / round(step)) * round(step))
    return int(math.floor(v))


def drop_duplicates(centres: np.ndarray, nucleus_polygons, tile_index: np.ndarray, min_overlap: float = 0.5
                    ) -> np.ndarray:
    """Indices to keep after removing cells found twice by neighbouring tiles (the earlier tile wins).

    With lattice-aligned reads the ownership rule alone leaves no duplicates; this is the safety net for slides
    whose pyramid forces a resampled read (sub-pixel differences can move a centre across a core border). Two
    cells from different tiles whose nuclei overlap by more than ``min_overlap`` of the smaller are one cell.
    """
    from shapely import STRtree

    n = len(centres)
    keep = np.ones(n, bool)
    if n < 2:
        return np.flatnonzero(keep)
    polys = list(nucleus_polygons)
    tree = STRtree(polys)
    a, b = tree.query(polys, predicate="intersects")
    for i, j in zip(a, b):
        if i >= j or tile_index[i] == tile_index[j] or not (keep[i] and keep[j]):
            continue
        inter = polys[i].intersection(polys[j]).area
        if inter > min_overlap * min(polys[i].area, polys[j].area):
            keep[j] = False
    return np.flatnonzero(keep)
