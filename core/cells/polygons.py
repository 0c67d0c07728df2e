"""Label images to valid level-0 polygons, one per label.

QuPath refuses invalid rings, and the outline of a pixel mask traced by marching squares can pinch at a diagonal
pixel pair, so every polygon is repaired and reduced to its largest piece. Outlines are simplified to about a
quarter of a tile pixel: a superficial cell then needs tens of vertices instead of hundreds, and the exported file
stays small.
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import Polygon
from skimage.measure import find_contours

from .cell import TileFrame


def largest_polygon(geom) -> Polygon | None:
    """The biggest polygonal part of a (possibly repaired) geometry, without holes; None when it has no area."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and g.area > 0]
    if not parts:
        parts = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon" and g.area > 0]
    if not parts:
        return None
    best = max(parts, key=lambda g: g.area)
    return Polygon(best.exterior)


def label_polygons(labels: np.ndarray, frame: TileFrame, tolerance_px: float = 0.25) -> dict[int, Polygon]:
    """Outline of every label in level-0 coordinates (traced per label, built and simplified in one batch)."""
    slices = ndimage.find_objects(labels)
    dx, dy = frame.downsample
    ids, rings = [], []
    for lab, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        r0, c0 = sl[0].start, sl[1].start
        sub = np.pad(labels[sl] == lab, 1)
        contours = find_contours(sub.astype(np.uint8), 0.5)
        if not contours:
            continue
        ring = max(contours, key=len)  # the outer boundary: labels are connected regions
        if len(ring) < 4:
            continue
        xs = frame.x0 + (ring[:, 1] + (c0 - 1) + 0.5) * dx
        ys = frame.y0 + (ring[:, 0] + (r0 - 1) + 0.5) * dy
        ids.append(lab)
        rings.append(np.column_stack([xs, ys]))
    if not rings:
        return {}
    lengths = np.array([len(r) for r in rings])
    polys = shapely.polygons(shapely.linearrings(np.concatenate(rings), indices=np.repeat(np.arange(len(rings)),
                                                                                         lengths)))
    if tolerance_px > 0:
        polys = shapely.simplify(polys, tolerance_px * max(dx, dy), preserve_topology=False)
    valid = shapely.is_valid(polys)
    out: dict[int, Polygon] = {}
    for lab, poly, ok in zip(ids, polys, valid):
        poly = poly if ok and len(shapely.get_rings(poly)) == 1 else largest_polygon(poly)
        if poly is not None and not poly.is_empty:
            out[lab] = poly
    return out
