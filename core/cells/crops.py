"""224 x 224 crops centred on a cell's nucleus at the model's MPP: what the backbone embeds for each cell.

The published cell classification and retrieval protocols work on crops centred on one cell, so the crop is
placed on the nucleus centre (not the cell's bounding box, which overlapping neighbours distort). When the
localisation tile was read at the model's MPP and its margin holds the whole crop, the crop is cut from the tile
already in memory (no second read; the centre lands within half a pixel); otherwise it is read from the slide with
``Slide.read_scaled`` (within half a level-0 pixel).
"""

from __future__ import annotations

import math

import numpy as np

from ..slides import Slide
from .cell import TileFrame


def crop_box(cx: float, cy: float, mpp: float, slide_mpp: tuple[float, float], size: int = 224
             ) -> tuple[float, float, float, float]:
    """Level-0 (x, y, w, h) of a ``size``-pixel crop at ``mpp`` centred on level-0 (cx, cy)."""
    w0 = size * mpp / slide_mpp[0]
    h0 = size * mpp / slide_mpp[1]
    return cx - w0 / 2, cy - h0 / 2, w0, h0


def cut_from_tile(tile: np.ndarray, frame: TileFrame, cx: float, cy: float, size: int = 224
                  ) -> tuple[np.ndarray, tuple[float, float, float, float]] | None:
    """The crop cut out of ``tile`` (read at the crop's MPP) and its level-0 box, or None when it does not fit."""
    dx, dy = frame.downsample
    c0 = int(math.floor((cx - frame.x0) / dx - size / 2 + 0.5))
    r0 = int(math.floor((cy - frame.y0) / dy - size / 2 + 0.5))
    h, w = tile.shape[:2]
    if c0 < 0 or r0 < 0 or c0 + size > w or r0 + size > h:
        return None
    crop = np.ascontiguousarray(tile[r0:r0 + size, c0:c0 + size])
    return crop, (frame.x0 + c0 * dx, frame.y0 + r0 * dy, size * dx, size * dy)


def read_crop(slide: Slide, cx: float, cy: float, mpp: float, size: int = 224
              ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The crop read from the slide (any pyramid level, resampled to ``mpp``) and its level-0 box."""
    x, y, w0, h0 = crop_box(cx, cy, mpp, slide.mpp, size)
    x, y = float(round(x)), float(round(y))  # read_scaled reads from whole level-0 pixels
    return slide.read_scaled(x, y, w0, h0, size, size), (x, y, w0, h0)


def crops_for(cells, tile: np.ndarray, frame: TileFrame, slide: Slide, mpp: float, size: int = 224
              ) -> tuple[list[np.ndarray], np.ndarray]:
    """Crops of ``cells`` (from the tile when it was read at ``mpp``, else from the slide) and their boxes."""
    same_scale = abs(frame.mpp - mpp) < 1e-9
    images, boxes = [], []
    for cell in cells:
        got = cut_from_tile(tile, frame, cell.centre[0], cell.centre[1], size) if same_scale else None
        if got is None:
            got = read_crop(slide, cell.centre[0], cell.centre[1], mpp, size)
        images.append(got[0])
        boxes.append(got[1])
    return images, np.asarray(boxes, np.float64).reshape(-1, 4)
