"""Where the cells are on a cytology slide: a low-resolution mask of everything that is not empty glass.

A Pap smear (and even more a liquid-based preparation) is mostly bright, empty background with cells scattered
over it; analysing only the cell-bearing area is the main speed lever. Tissue detectors built for histology
(Otsu on saturation) miss pale squamous cytoplasm and lone inflammatory cells, so this one measures how far each
pixel's colour is from the glass colour, keeps even tiny objects, and errs towards keeping: a dropped tile with a
diagnostic cell is worse than an analysed empty one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .slide import Slide

#: Microns per mask pixel: a lymphocyte (about 7 µm) still covers a few mask pixels.
DEFAULT_MASK_MPP = 4.0
#: Longest mask side; huge slides get a coarser mask rather than a huge read.
DEFAULT_MAX_SIDE = 4096
#: Colour distance (0-255 scale, max over channels) from glass that counts as "something is here".
MIN_THRESHOLD = 12.0
#: Mask growth around detected objects so tiles touching faint cell borders are kept.
DEFAULT_MARGIN_UM = 12.0


@dataclass
class ForegroundMask:
    """``mask`` (dilated, for tile selection) and ``cells`` (as detected) at ``downsample`` level-0 px per pixel."""

    mask: np.ndarray
    cells: np.ndarray
    downsample: tuple[float, float]
    #: Share of the slide area that carries cells (from ``cells``, before the safety margin).
    fraction: float
    background: tuple[int, int, int]
    threshold: float
    _integral: np.ndarray | None = field(default=None, repr=False)

    @property
    def kept_fraction(self) -> float:
        """Share of the slide area inside ``mask`` (cells plus margin)."""
        return float(self.mask.mean())

    def _sat(self) -> np.ndarray:
        if self._integral is None:
            sat = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.int64)
            np.cumsum(np.cumsum(self.mask, axis=0, dtype=np.int64), axis=1, out=sat[1:, 1:])
            self._integral = sat
        return self._integral

    def coverage(self, xs, ys, w: float, h: float) -> np.ndarray:
        """Share of mask pixels set under level-0 rectangles (x, y, w, h); vectorised over ``xs``, ``ys``.

        A rectangle touching a mask pixel at all counts that pixel, so coverage is 0 only for truly empty tiles.
        """
        sat = self._sat()
        mh, mw = self.mask.shape
        dx, dy = self.downsample
        xs = np.asarray(xs, np.float64)
        ys = np.asarray(ys, np.float64)
        c0 = np.clip(np.floor(xs / dx).astype(np.int64), 0, mw)
        r0 = np.clip(np.floor(ys / dy).astype(np.int64), 0, mh)
        c1 = np.clip(np.ceil((xs + w) / dx).astype(np.int64), 0, mw)
        r1 = np.clip(np.ceil((ys + h) / dy).astype(np.int64), 0, mh)
        total = sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]
        area = np.maximum((r1 - r0) * (c1 - c0), 1)
        return total / area

    def contains(self, x: float, y: float) -> bool:
        """Whether level-0 point (x, y) is in the kept area."""
        mh, mw = self.mask.shape
        c, r = int(x / self.downsample[0]), int(y / self.downsample[1])
        return 0 <= r < mh and 0 <= c < mw and bool(self.mask[r, c])


def detect_foreground(
    slide: Slide,
    mask_mpp: float = DEFAULT_MASK_MPP,
    max_side: int = DEFAULT_MAX_SIDE,
    threshold: float | None = None,
    margin_um: float = DEFAULT_MARGIN_UM,
    min_object_um2: float = 0.0,
) -> ForegroundMask:
    """Detect the cell-bearing area from a low-resolution overview of ``slide``.

    ``threshold`` (colour distance from glass, 0-255) defaults to the larger of ``MIN_THRESHOLD`` and five times
    the background noise. ``min_object_um2`` > 0 drops specks smaller than that (dust); the default keeps
    everything, because a lone lymphocyte is a few mask pixels.
    """
    from scipy import ndimage

    w, h = slide.dimensions
    ds = max(1.0, mask_mpp / slide.mpp[0], max(w, h) / float(max_side))
    img = slide.overview(ds)
    mh, mw = img.shape[:2]
    dsx, dsy = w / mw, h / mh
    bx, by, bw, bh = slide.bounds
    inside = np.zeros((mh, mw), bool)
    inside[int(by / dsy):int(math.ceil((by + bh) / dsy)), int(bx / dsx):int(math.ceil((bx + bw) / dsx))] = True
    cells, bg, thr = classify_pixels(img, threshold, inside if not inside.all() else None)
    px_um2 = dsx * slide.mpp[0] * dsy * slide.mpp[1]
    if min_object_um2 > 0:
        labels, n = ndimage.label(cells)
        if n:
            areas = np.bincount(labels.ravel())
            small = areas * px_um2 < min_object_um2
            small[0] = False
            cells = cells & ~small[labels]
    fraction = float(cells.mean())
    grown = ndimage.binary_fill_holes(cells)
    radius = margin_um / (dsx * slide.mpp[0])
    if radius >= 0.5:
        r = int(math.ceil(radius))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        grown = ndimage.binary_dilation(grown, structure=(xx * xx + yy * yy) <= radius * radius)
    return ForegroundMask(mask=grown, cells=cells, downsample=(dsx, dsy), fraction=fraction,
                          background=bg, threshold=thr)


def classify_pixels(
    img: np.ndarray, threshold: float | None = None, inside: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[int, int, int], float]:
    """Per-pixel "not glass" for an RGB overview; returns (mask, glass colour, threshold used).

    The glass colour is the median of the brightest tenth of pixels, ignoring pure white: padding outside a
    scanner's scanned area (``inside`` marks that area when known) is painted white and is brighter than real
    glass. When most of the scanned area is pure white, the glass itself is white.
    """
    px = img.reshape(-1, 3)
    lum = px.astype(np.int16).sum(axis=1)
    pad = (px >= 254).all(axis=1)
    stats = np.ones(len(px), bool) if inside is None else inside.reshape(-1)
    usable = stats & ~pad
    if not usable.any() or pad[stats].mean() > 0.5:
        bg = np.array([255.0, 255.0, 255.0])
        ref = stats & (lum >= 3 * 250)
    else:
        cut = np.percentile(lum[usable], 90)
        ref = usable & (lum >= cut)
        bg = np.median(px[ref], axis=0)
    dist = np.abs(px.astype(np.float32) - bg.astype(np.float32)).max(axis=1)
    if threshold is None:
        ref_dist = dist[ref] if ref.any() else np.zeros(1, np.float32)
        noise = 1.4826 * float(np.median(np.abs(ref_dist - np.median(ref_dist))))
        threshold = max(MIN_THRESHOLD, 5.0 * noise)
    mask = (dist > threshold) & ~pad
    return mask.reshape(img.shape[:2]), tuple(int(round(v)) for v in bg), float(threshold)
