"""The open slide's annotations drawn over it: the layer named "Annotations".

The store may hold a handful of drawn regions or 100,000 imported cells, so the layer chooses how to draw per view.
While at most a few thousand objects (and a bounded number of outline segments) meet the view, their outlines are
Qt vectors, crisp at any zoom, prepared for the view plus a margin and reused while panning inside it. Beyond that,
the view plus a margin is rasterised with numpy on the overlay thread: objects smaller than 3 screen pixels become
dots and those under 8 pixels small rings, both straight from the store's ``query_boxes`` arrays (no Python object
per cell); only larger ones, which cannot be many on one screen, are outlined from their geometry.
An edit repaints only the rectangle it touched (``StoreEvent.bounds``) when few objects lie there, so drawing or
moving a region over 100,000 cells costs milliseconds; bigger changes re-render in the background while the
previous picture stays on screen. The selection is drawn on top in both modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import shapely
from PySide6.QtCore import QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPainterPath, QPen, QPolygonF

from core.overlays import ObjectSet, draw_squares, render_objects

# the detection layers' measured limits: vectors while at most VECTOR_LIMIT objects with at most SEGMENT_BUDGET
# outline segments meet the view (plus margin)
from .layers import SEGMENT_BUDGET, VECTOR_LIMIT, OverlayLayer, _draw_lines, _line_array, qcolor, render_queue
from .workers import Mailbox

#: Share of the view's size prepared on every side, so small pans reuse what was built.
MARGIN = 0.25
#: In raster mode, objects whose box is smaller than this on screen are dots, those up to ``OUTLINE_FROM_PX`` are
#: drawn as small rings around their box (their true outline would be a blur of a few pixels and costs 20x more),
#: and larger ones with their true outline.
DOT_BELOW_PX = 3.0
OUTLINE_FROM_PX = 8.0
#: Point annotations are drawn as discs of this radius (screen pixels).
POINT_RADIUS_PX = 5.0
#: An edit whose rectangle holds at most this many objects is re-rendered into the raster at once, on the GUI
#: thread (about 40 µs per outlined object here, so at most ~15 ms); larger ones go to the overlay thread.
PATCH_LIMIT = 400
SELECTION_COLOR = QColor(255, 255, 255)
SELECTION_HALO = QColor(0, 0, 0, 200)

Rect = tuple[float, float, float, float]


# ------------------------------------------------------------------------------------------------ geometry helpers
def outline_segments(geoms) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, owner, points, point_owner): every outline segment of ``geoms`` (polygon rings, lines) as start and end
    points with the index of the geometry it belongs to, then every point with its geometry's index. Vectorised, so
    thousands of outlines cost a few shapely calls rather than a Python loop."""
    g = np.asarray(geoms, dtype=object).reshape(-1)
    empty2 = np.zeros((0, 2))
    none = np.zeros(0, np.int64)
    if not len(g):
        return empty2, empty2, none, empty2, none
    parts, owner = shapely.get_parts(g, return_index=True)
    types = shapely.get_type_id(parts)
    polygons = types == 3
    rings, ring_part = shapely.get_rings(parts[polygons], return_index=True)
    lines = (types == 1) | (types == 2)
    paths = np.concatenate([rings, parts[lines]])
    path_owner = np.concatenate([owner[polygons][ring_part], owner[lines]]).astype(np.int64)
    coords, path_index = shapely.get_coordinates(paths, return_index=True)
    if len(coords) > 1:
        same = path_index[:-1] == path_index[1:]
        a, b = coords[:-1][same], coords[1:][same]
        seg_owner = path_owner[path_index[:-1][same]]
    else:
        a, b, seg_owner = empty2, empty2, none
    points = types == 0
    return a, b, seg_owner, shapely.get_coordinates(parts[points]), owner[points].astype(np.int64)


def geometry_path(geom) -> QPainterPath:
    """A shapely geometry (level-0 pixels) as a QPainterPath: rings closed, lines open; points are left out."""
    path = QPainterPath()
    for part in shapely.get_parts(np.asarray([geom], dtype=object)):
        kind = part.geom_type
        if kind == "Polygon":
            for ring in [part.exterior, *part.interiors]:
                coords = np.asarray(ring.coords)
                if len(coords) >= 3:
                    path.addPolygon(QPolygonF([QPointF(x, y) for x, y in coords[:, :2].tolist()]))
                    path.closeSubpath()
        elif kind in ("LineString", "LinearRing"):
            coords = np.asarray(part.coords)
            if len(coords) >= 2:
                path.addPolygon(QPolygonF([QPointF(x, y) for x, y in coords[:, :2].tolist()]))
    return path


def draw_geometry(painter: QPainter, geom, level0_rect: QRectF, scale: float, pen: QPen,
                  point_radius: float = POINT_RADIUS_PX + 3) -> None:
    """Stroke one geometry in level-0 pixels onto a view painter (widget pixels); points become rings. For the
    few shapes a tool or the selection draws, not for many objects."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    pen = QPen(pen)
    pen.setCosmetic(True)
    painter.setPen(pen)
    x0, y0 = level0_rect.left(), level0_rect.top()
    parts = shapely.get_parts(np.asarray([geom], dtype=object))
    for x, y in shapely.get_coordinates(parts[shapely.get_type_id(parts) == 0]).tolist():
        painter.drawEllipse(QPointF((x - x0) * scale, (y - y0) * scale), point_radius, point_radius)
    path = geometry_path(geom)
    if not path.isEmpty():
        painter.translate(-x0 * scale, -y0 * scale)
        painter.scale(scale, scale)
        painter.drawPath(path)
    painter.restore()


def _packed(colours: np.ndarray) -> np.ndarray:
    c = np.asarray(colours, np.int64).reshape(-1, 3)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def _rgb(packed: int) -> tuple[int, int, int]:
    return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255


# ---------------------------------------------------------------------------------------------------- raster
def render_area(store, x0: float, y0: float, ds: float, width: int, height: int) -> np.ndarray:
    """The store's objects over the level-0 area whose top-left is (x0, y0), at ``ds`` level-0 pixels per output
    pixel, as a (height, width) uint32 premultiplied ARGB array (0 = transparent). Safe on any thread."""
    canvas = np.zeros((height, width), np.uint32)
    pad = (POINT_RADIUS_PX + 3) * ds
    area = (x0 - pad, y0 - pad, x0 + width * ds + pad, y0 + height * ds + pad)
    objs = None
    for _ in range(3):  # the boxes and the objects must describe the same state; another thread may be editing
        revision = store.revision
        bounds, colours = store.query_boxes(area)
        extent = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) / ds
        is_point = (bounds[:, 2] == bounds[:, 0]) & (bounds[:, 3] == bounds[:, 1])
        large = ~is_point & (extent >= OUTLINE_FROM_PX)
        if not large.any():
            break
        objs = store.query(area, exact=False)
        if len(objs) == len(bounds) and store.revision == revision:
            break
        objs = None
    else:  # still changing: take the objects and derive everything from them
        objs = store.query(area, exact=False)
        geoms = np.empty(len(objs), dtype=object)
        geoms[:] = [a.geometry for a in objs]
        bounds = shapely.bounds(geoms).reshape(-1, 4)
        colours = np.array([a.display_color for a in objs], np.uint8).reshape(-1, 3)
        extent = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) / ds
        is_point = (bounds[:, 2] == bounds[:, 0]) & (bounds[:, 3] == bounds[:, 1])
        large = ~is_point & (extent >= OUTLINE_FROM_PX)
    if not len(bounds):
        return canvas
    argb = (np.uint32(0xFF000000) | _packed(colours).astype(np.uint32))
    dots = ~is_point & (extent < DOT_BELOW_PX)
    if dots.any():
        centre = np.column_stack([(bounds[dots, 0] + bounds[dots, 2]) / 2, (bounds[dots, 1] + bounds[dots, 3]) / 2])
        draw_squares(canvas, (centre - (x0, y0)) / ds, argb[dots], 1)
    rings = ~is_point & ~dots & ~large
    if rings.any():
        _rings(canvas, (bounds[rings] - (x0, y0, x0, y0)) / ds, argb[rings])
    if large.any():
        idx = np.nonzero(large)[0]
        geoms = np.empty(len(idx), dtype=object)
        geoms[:] = [objs[i].geometry for i in idx.tolist()]
        packed = _packed(colours[idx])
        palette, classes = np.unique(packed, return_inverse=True)
        shapes = ObjectSet.from_geometries(geoms, classes.astype(np.int64), [str(i) for i in range(len(palette))],
                                           [_rgb(int(p)) for p in palette])
        drawn = render_objects(shapes.snapshot(), x0, y0, ds, width, height, line_px=2 if ds <= 8 else 1)
        mask = drawn != 0
        canvas[mask] = drawn[mask]
    if is_point.any():
        draw_squares(canvas, (bounds[is_point, :2] - (x0, y0)) / ds, argb[is_point], int(POINT_RADIUS_PX) - 2)
    return canvas


def _rings(canvas: np.ndarray, boxes: np.ndarray, colours: np.ndarray) -> None:
    """One-pixel outlines of small boxes (pixels), corners left out so they read as round cells."""
    h, w = canvas.shape
    x0, y0, x1, y1 = (np.floor(boxes[:, i]).astype(np.int64) for i in range(4))
    bw, bh = x1 - x0, y1 - y0
    for k in range(1, int(max(bw.max(), bh.max()))):
        for m, xs, ys in (((k < bw), x0 + k, y0), ((k < bw), x0 + k, y1), ((k < bh), x0, y0 + k),
                          ((k < bh), x1, y0 + k)):
            ok = m & (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            canvas[ys[ok], xs[ok]] = colours[ok]


@dataclass
class _Canvas:
    """A rendered area: level-0 top-left, downsample, pixels (the QImage shares their memory)."""

    x0: float
    y0: float
    ds: float
    pixels: np.ndarray
    image: QImage
    revision: int
    stale: bool = False

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    def covers(self, rect: QRectF, ds: float) -> bool:
        eps = 1e-6 * max(1.0, ds)
        return (math.isclose(self.ds, ds, rel_tol=1e-9) and self.x0 <= rect.left() + eps
                and self.y0 <= rect.top() + eps and self.x0 + self.width * ds >= rect.right() - eps
                and self.y0 + self.height * ds >= rect.bottom() - eps)


@dataclass
class _Vectors:
    revision: int
    area: Rect
    lines: list  # [(rgb, line array)]
    points: list  # [(rgb, (n, 2) level-0 xy)]


def _contains(area: Rect, rect: QRectF) -> bool:
    return (area[0] <= rect.left() and area[1] <= rect.top() and area[2] >= rect.right()
            and area[3] >= rect.bottom())


def _expanded(rect: QRectF, share: float) -> Rect:
    mx, my = rect.width() * share, rect.height() * share
    return rect.left() - mx, rect.top() - my, rect.right() + mx, rect.bottom() + my


# ----------------------------------------------------------------------------------------------------- layer
class AnnotationLayer(OverlayLayer):
    """Draws an ``AnnotationStore`` in class colours; ``store_changed(event)`` must be called (on the GUI thread)
    with every ``StoreEvent`` (the session's ``annotationsChanged`` signal)."""

    z = 100  # the pathologist's own work stays above every analysis overlay

    def __init__(self, store, name: str = "Annotations", *, visible: bool = True, opacity: float = 1.0,
                 line_width: float = 1.8, vector_limit: int = VECTOR_LIMIT, segment_budget: int = SEGMENT_BUDGET,
                 parent: QObject | None = None) -> None:
        super().__init__(name, visible, opacity, parent)
        self.store = store
        self.line_width = float(line_width)
        self.vector_limit = int(vector_limit)
        self.segment_budget = int(segment_budget)
        #: Ids drawn highlighted (the tools' selection).
        self.selection: tuple[str, ...] = ()
        #: "vector", "raster" or "empty": what the last paint did (tests and benchmarks read it).
        self.last_mode = ""
        self._mode: tuple | None = None  # (revision, ds, area, mode)
        self._vectors: _Vectors | None = None
        self._canvas: _Canvas | None = None
        self._raster_current = False  # the last raster paint showed an up-to-date canvas at the view's scale
        self._requested: tuple | None = None
        self._serial = 0
        self._changes: list[tuple[int, Rect]] = []
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._drain)

    # -------------------------------------------------------------------------------------------------- model
    def set_selection(self, ids) -> None:
        ids = tuple(ids)
        if ids != self.selection:
            self.selection = ids
            self.changed.emit()

    def store_changed(self, event) -> None:
        """A ``StoreEvent`` arrived: forget the vector cache, patch or retire the raster, repaint."""
        self._mode = None
        self._vectors = None
        bounds = event.bounds()
        if bounds is not None:
            self._changes.append((event.revision, bounds))
            del self._changes[:-256]
            if self._canvas is not None:
                if self.last_mode == "raster":
                    self._patch(self._canvas, bounds)
                else:  # not on screen: redo it only if it is needed again (meanwhile it stands in)
                    self._canvas.stale = True
        self.changed.emit()

    def _patch(self, canvas: _Canvas, bounds: Rect) -> None:
        """Re-render the part of ``canvas`` a change touched, if that is cheap; otherwise mark it stale."""
        ds = canvas.ds
        pad = (POINT_RADIUS_PX + 4) * ds
        px0 = max(0, math.floor((bounds[0] - pad - canvas.x0) / ds))
        py0 = max(0, math.floor((bounds[1] - pad - canvas.y0) / ds))
        px1 = min(canvas.width, math.ceil((bounds[2] + pad - canvas.x0) / ds))
        py1 = min(canvas.height, math.ceil((bounds[3] + pad - canvas.y0) / ds))
        if px1 <= px0 or py1 <= py0:
            return
        if (px1 - px0) * (py1 - py0) > canvas.width * canvas.height // 2:
            canvas.stale = True
            return
        x0, y0 = canvas.x0 + px0 * ds, canvas.y0 + py0 * ds
        if len(self.store.query_boxes((x0, y0, canvas.x0 + px1 * ds, canvas.y0 + py1 * ds))[0]) > PATCH_LIMIT:
            canvas.stale = True
            return
        canvas.pixels[py0:py1, px0:px1] = render_area(self.store, x0, y0, ds, px1 - px0, py1 - py0)

    # ------------------------------------------------------------------------------------------------ drawing
    def mode_for(self, level0_rect: QRectF, scale: float) -> str:
        """'vector', 'raster' or 'empty' (nothing near the view): what ``paint`` does for this view."""
        ds = 1.0 / scale
        revision = self.store.revision
        cached = self._mode
        if cached is not None and cached[0] == revision and cached[1] == ds and _contains(cached[2], level0_rect):
            return cached[3]
        area = _expanded(level0_rect, MARGIN)
        count = len(self.store.query_boxes(area)[0])
        if count == 0:
            mode = "empty"
        elif count > self.vector_limit:
            mode = "raster"
        else:
            objs = self.store.query(area, exact=False)
            geoms = np.empty(len(objs), dtype=object)
            geoms[:] = [a.geometry for a in objs]
            if int(shapely.get_num_coordinates(geoms).sum()) > self.segment_budget:
                mode = "raster"
            else:
                mode = "vector"
                self._vectors = self._build_vectors(objs, geoms, revision, area)
        self._mode = (revision, ds, area, mode)
        return mode

    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        mode = self.mode_for(level0_rect, scale) if len(self.store) else "empty"
        self.last_mode = mode
        if mode == "vector":
            self._paint_vectors(painter, level0_rect, scale)
        elif mode == "raster":
            self._paint_raster(painter, level0_rect, scale)
        self._paint_selection(painter, level0_rect, scale)

    def _build_vectors(self, objs, geoms, revision: int, area: Rect) -> _Vectors:
        colours = np.array([a.display_color for a in objs], np.uint8).reshape(-1, 3)
        a, b, owner, points, point_owner = outline_segments(geoms)
        packed = _packed(colours)
        lines, dots = [], []
        if len(a):
            seg_key = packed[owner]
            for key in np.unique(seg_key).tolist():
                m = seg_key == key
                lines.append((_rgb(key), _line_array(np.column_stack([a[m], b[m]]))))
        if len(points):
            pt_key = packed[point_owner]
            for key in np.unique(pt_key).tolist():
                dots.append((_rgb(key), points[pt_key == key]))
        return _Vectors(revision, area, lines, dots)

    def _paint_vectors(self, painter: QPainter, rect: QRectF, scale: float) -> None:
        vectors = self._vectors
        if vectors is None or vectors.revision != self.store.revision or not _contains(vectors.area, rect):
            self._mode = None
            if self.mode_for(rect, scale) != "vector":
                return
            vectors = self._vectors
        quality = painter.testRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        x0, y0 = rect.left(), rect.top()
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, quality)
        painter.translate(-x0 * scale, -y0 * scale)
        painter.scale(scale, scale)
        width = self.line_width if quality else 1.0
        for rgb, array in vectors.lines:
            pen = QPen(qcolor(rgb), width)
            pen.setCosmetic(True)
            pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
            painter.setPen(pen)
            _draw_lines(painter, array)
        painter.restore()
        if vectors.points:
            painter.save()
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setPen(QPen(QColor(0, 0, 0, 170), 1.2))
            for rgb, xy in vectors.points:
                painter.setBrush(QBrush(qcolor(rgb)))
                for x, y in xy.tolist():
                    painter.drawEllipse(QPointF((x - x0) * scale, (y - y0) * scale), POINT_RADIUS_PX,
                                        POINT_RADIUS_PX)
            painter.restore()

    def _paint_raster(self, painter: QPainter, rect: QRectF, scale: float) -> None:
        ds = 1.0 / scale
        canvas = self._canvas
        moving = not painter.testRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        current = canvas is not None and canvas.covers(rect, ds) and not canvas.stale
        self._raster_current = current
        if not current and (canvas is None or not moving):  # while the view moves, the old picture stands in
            self._request_render(rect, ds)
        if canvas is None:
            return
        target = QRectF((canvas.x0 - rect.left()) * scale, (canvas.y0 - rect.top()) * scale,
                        canvas.width * canvas.ds * scale, canvas.height * canvas.ds * scale)
        painter.save()
        if math.isclose(canvas.ds, ds, rel_tol=1e-9):  # pixel for pixel: keep it sharp
            target.moveTo(round(target.left()), round(target.top()))
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(target, canvas.image, QRectF(canvas.image.rect()))
        painter.restore()

    def _request_render(self, rect: QRectF, ds: float) -> None:
        mw = math.ceil(rect.width() / ds * MARGIN)
        mh = math.ceil(rect.height() / ds * MARGIN)
        w = math.ceil(rect.width() / ds) + 2 * mw
        h = math.ceil(rect.height() / ds) + 2 * mh
        x0, y0 = rect.left() - mw * ds, rect.top() - mh * ds
        if self._requested is not None:
            rx0, ry0, rds, rw, rh, serial = self._requested
            if (serial == self._serial and math.isclose(rds, ds, rel_tol=1e-9) and rx0 <= rect.left()
                    and ry0 <= rect.top() and rx0 + rw * ds >= rect.right() and ry0 + rh * ds >= rect.bottom()):
                return  # what is on its way will do
        self._serial += 1
        key = (x0, y0, ds, w, h, self._serial)
        self._requested = key
        render_queue().submit(self, [(0.0, key, partial(self._render, key))])

    def _render(self, key) -> None:
        """Overlay thread: render the requested area and hand it to the GUI thread."""
        x0, y0, ds, w, h, _ = key
        revision = self.store.revision
        pixels = render_area(self.store, x0, y0, ds, w, h)
        self._mail.post((key, pixels, revision))

    def _drain(self) -> None:
        for key, pixels, revision in self._mail.take():
            x0, y0, ds, w, h, serial = key
            image = QImage(pixels.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied)
            canvas = _Canvas(x0, y0, ds, pixels, image, revision)
            for changed_revision, bounds in self._changes:  # edits made while it was rendering
                if changed_revision > revision:
                    self._patch(canvas, bounds)
            self._canvas = canvas
            if key == self._requested:
                self._requested = None
        self.changed.emit()

    def _paint_selection(self, painter: QPainter, rect: QRectF, scale: float) -> None:
        if not self.selection:
            return
        halo = QPen(SELECTION_HALO, 4.5)
        line = QPen(SELECTION_COLOR, 2.0, Qt.PenStyle.DashLine)
        for key in self.selection:
            try:
                a = self.store.get(key)
            except KeyError:
                continue
            x0, y0, x1, y1 = a.bounds
            if x1 < rect.left() or x0 > rect.right() or y1 < rect.top() or y0 > rect.bottom():
                continue
            draw_geometry(painter, a.geometry, rect, scale, halo)
            draw_geometry(painter, a.geometry, rect, scale, line)

    # ---------------------------------------------------------------------------------------------- queries
    def is_complete(self) -> bool:
        """The last paint showed up-to-date pixels (vectors, nothing, or a current raster with no render due)."""
        if self.last_mode in ("vector", "empty"):
            return True
        return self._raster_current and self._requested is None and render_queue().idle()

    def close(self) -> None:
        render_queue().cancel(self)
