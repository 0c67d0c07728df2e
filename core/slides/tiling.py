"""Tiles of N pixels at a target microns-per-pixel, laid over a slide in level-0 coordinates.

Models are trained at a physical resolution (for example 224 px at 0.5 µm/px), not at "level 1", so a grid is
specified by MPP and each tile is read from the most detailed pyramid level that is not finer than needed, then
resized. Coordinates stay level-0 so features, detections and the viewer agree without conversions. Tiles are
kept as two integer arrays rather than objects: a 100k-pixel slide has hundreds of thousands of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .foreground import ForegroundMask
from .slide import Slide


@dataclass(frozen=True)
class Tile:
    """One tile: its position in the grid and its footprint in level-0 pixels."""

    index: int
    col: int
    row: int
    x: int
    y: int
    w: int
    h: int


class TileGrid:
    """A grid of ``tile_px`` tiles at ``mpp`` over the slide's scanned area, optionally limited to the foreground.

    ``overlap_px`` is measured in output pixels (at ``mpp``). With a ``foreground`` mask, tiles whose coverage
    is at most ``min_coverage`` are dropped; the default 0 drops only tiles with no cell at all. Partial tiles at
    the right and bottom edges are kept and padded with white when read.
    """

    def __init__(
        self,
        slide: Slide,
        tile_px: int = 224,
        mpp: float | None = 0.5,
        overlap_px: int = 0,
        foreground: ForegroundMask | None = None,
        min_coverage: float = 0.0,
    ) -> None:
        if tile_px <= 0:
            raise ValueError("tile_px must be positive")
        if not 0 <= overlap_px < tile_px:
            raise ValueError(f"overlap_px must be in [0, {tile_px}), got {overlap_px}")
        self.slide = slide
        self.tile_px = int(tile_px)
        self.mpp = float(mpp) if mpp else float(slide.mpp[0])
        self.overlap_px = int(overlap_px)
        self.scale = self.mpp / slide.mpp[0]  # level-0 px per output px (x; y uses the slide's y MPP)
        scale_y = self.mpp / slide.mpp[1]
        self.size0 = (max(1, int(round(tile_px * self.scale))), max(1, int(round(tile_px * scale_y))))
        stride = ((tile_px - overlap_px) * self.scale, (tile_px - overlap_px) * scale_y)
        self.stride0 = stride
        bx, by, bw, bh = slide.bounds
        self.cols = max(1, int(math.ceil((bw - self.size0[0]) / stride[0] - 1e-9)) + 1)
        self.rows = max(1, int(math.ceil((bh - self.size0[1]) / stride[1] - 1e-9)) + 1)
        cols, rows = np.meshgrid(np.arange(self.cols), np.arange(self.rows))
        cols, rows = cols.ravel(), rows.ravel()
        xs = bx + np.round(cols * stride[0]).astype(np.int64)
        ys = by + np.round(rows * stride[1]).astype(np.int64)
        self.n_total = len(xs)
        self.foreground = foreground
        if foreground is not None:
            keep = foreground.coverage(xs, ys, self.size0[0], self.size0[1]) > min_coverage
            cols, rows, xs, ys = cols[keep], rows[keep], xs[keep], ys[keep]
        self.cols_rows = np.stack([cols, rows], axis=1)
        self.coords = np.stack([xs, ys], axis=1)
        #: The pyramid level every tile is read from.
        self.level = slide.level_for_downsample(self.scale)

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def n_kept(self) -> int:
        return len(self.coords)

    @property
    def dropped_fraction(self) -> float:
        """Share of the full grid that the foreground mask removed (0 without a mask)."""
        return 1.0 - self.n_kept / self.n_total if self.n_total else 0.0

    def tile(self, index: int) -> Tile:
        x, y = (int(v) for v in self.coords[index])
        col, row = (int(v) for v in self.cols_rows[index])
        return Tile(index, col, row, x, y, self.size0[0], self.size0[1])

    def __iter__(self) -> Iterator[Tile]:
        for i in range(len(self)):
            yield self.tile(i)

    def read(self, tile: Tile | int) -> np.ndarray:
        """The tile's pixels at the grid's MPP: (tile_px, tile_px, 3) RGB uint8."""
        if not isinstance(tile, Tile):
            tile = self.tile(int(tile))
        return self.slide.read_scaled(tile.x, tile.y, tile.w, tile.h, self.tile_px, self.tile_px)

    def __repr__(self) -> str:
        return (f"<TileGrid {self.n_kept}/{self.n_total} tiles of {self.tile_px}px at {self.mpp:g} µm/px "
                f"({self.size0[0]}px level 0, level {self.level})>")
