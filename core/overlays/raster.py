"""Draw many objects into an ARGB32 array with numpy: the zoomed-out picture of 100,000 detections.

A GUI painter drawing one outline per call spends microseconds of interpreter time per object, which is fine for
the few thousand visible when zoomed in and far too slow for a whole slide. Here every outline segment of every
object is sampled at one-pixel spacing in a handful of vectorised operations (segments clipped to the canvas
first, so a huge polygon seen up close costs only its visible part), and objects smaller than two pixels become
dots. The result is premultiplied ARGB32 (0 = transparent), the layout Qt's ``Format_ARGB32_Premultiplied``
wraps without conversion.
"""

from __future__ import annotations

import numpy as np

from .objects import ObjectSnapshot

#: Objects whose bounding box is smaller than this many output pixels are drawn as dots.
DOT_BELOW_PX = 2.0


def render_objects(snapshot: ObjectSnapshot, x0: float, y0: float, ds: float, width: int, height: int,
                   line_px: int = 1, point_px: int = 2, hidden_classes: frozenset[int] = frozenset()) -> np.ndarray:
    """The objects of ``snapshot`` drawn over the level-0 area starting at (x0, y0) at ``ds`` level-0 pixels per
    output pixel, as a (height, width) uint32 premultiplied ARGB array.

    Outlines are ``line_px`` pixels thick (1 or 2), points are squares of ``2 * point_px + 1`` pixels, objects of
    a class in ``hidden_classes`` (indices; -1 for unclassified) are left out.
    """
    canvas = np.zeros((height, width), np.uint32)
    pad = (max(line_px, point_px) + 1) * ds
    idx = snapshot.query(x0 - pad, y0 - pad, x0 + width * ds + pad, y0 + height * ds + pad)
    if not len(idx):
        return canvas
    classes = snapshot.classes_of(idx).astype(np.int64)
    if hidden_classes:
        keep = ~np.isin(classes, np.fromiter(hidden_classes, np.int64))
        idx, classes = idx[keep], classes[keep]
    palette = snapshot.argb()
    colors = palette[np.where(classes < 0, len(palette) - 1, np.minimum(classes, len(palette) - 1))]
    bounds = snapshot.bounds_of(idx)
    points = snapshot.is_point(idx)
    extent = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) / ds
    dots = ~points & (extent < DOT_BELOW_PX)
    outlines = ~points & ~dots

    if outlines.any():
        a, b, owner = snapshot.segments(idx[outlines])
        owner_cls = snapshot.classes_of(owner).astype(np.int64)
        seg_colors = palette[np.where(owner_cls < 0, len(palette) - 1, np.minimum(owner_cls, len(palette) - 1))]
        _draw_segments(canvas, (a - (x0, y0)) / ds, (b - (x0, y0)) / ds, seg_colors, line_px)
    if dots.any():
        centre = np.column_stack([(bounds[dots, 0] + bounds[dots, 2]) / 2, (bounds[dots, 1] + bounds[dots, 3]) / 2])
        draw_squares(canvas, (centre - (x0, y0)) / ds, colors[dots], 0 if line_px < 2 else 1)
    if points.any():
        centre = np.column_stack([bounds[points, 0], bounds[points, 1]])
        draw_squares(canvas, (centre - (x0, y0)) / ds, colors[points], point_px)
    return canvas


def _draw_segments(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, colors: np.ndarray, line_px: int) -> None:
    h, w = canvas.shape
    if not len(a):
        return
    a, b, colors = _clip(a, b, colors, -1.0, -1.0, w + 1.0, h + 1.0)
    if not len(a):
        return
    d = b - a
    n = np.ceil(np.abs(d).max(axis=1)).astype(np.int64) + 1
    total = int(n.sum())
    seg = np.repeat(np.arange(len(a)), n)
    step = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    frac = step / np.maximum(n - 1, 1)[seg]
    xs = np.floor(a[seg, 0] + d[seg, 0] * frac).astype(np.int64)
    ys = np.floor(a[seg, 1] + d[seg, 1] * frac).astype(np.int64)
    values = colors[seg]
    offsets = ((0, 0),) if line_px < 2 else ((0, 0), (1, 0), (0, 1), (1, 1))
    for ox, oy in offsets:
        x, y = xs + ox, ys + oy
        ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        canvas[y[ok], x[ok]] = values[ok]


def draw_squares(canvas: np.ndarray, centres: np.ndarray, colors: np.ndarray, radius: int) -> None:
    """Filled squares of side ``2 * radius + 1`` at ``centres`` (pixels of ``canvas``, an (H, W) packed-colour
    array): how objects too small to outline are drawn."""
    h, w = canvas.shape
    cx = np.floor(centres[:, 0]).astype(np.int64)
    cy = np.floor(centres[:, 1]).astype(np.int64)
    for oy in range(-radius, radius + 1):
        for ox in range(-radius, radius + 1):
            x, y = cx + ox, cy + oy
            ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            canvas[y[ok], x[ok]] = colors[ok]


def _clip(a: np.ndarray, b: np.ndarray, colors: np.ndarray, xmin: float, ymin: float, xmax: float, ymax: float):
    """Liang-Barsky: the part of every segment inside the rectangle; segments wholly outside are dropped."""
    d = b - a
    t0 = np.zeros(len(a))
    t1 = np.ones(len(a))
    keep = np.ones(len(a), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, q in ((-d[:, 0], a[:, 0] - xmin), (d[:, 0], xmax - a[:, 0]),
                     (-d[:, 1], a[:, 1] - ymin), (d[:, 1], ymax - a[:, 1])):
            r = q / p
            keep &= ~((p == 0) & (q < 0))
            t0 = np.where(p < 0, np.maximum(t0, r), t0)
            t1 = np.where(p > 0, np.minimum(t1, r), t1)
    keep &= t0 <= t1
    a, d, t0, t1 = a[keep], d[keep], t0[keep, None], t1[keep, None]
    return a + d * t0, a + d * t1, colors[keep]
