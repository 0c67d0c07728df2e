"""Overlay layers: Qt views of ``core.overlays`` models, drawn by the slide view over the slide.

A layer has a name, visibility and opacity and paints itself given the visible level-0 rectangle and the scale
(screen pixels per level-0 pixel); the view knows nothing of what a layer holds. Data lives in core: a
``VectorLayer`` shows an ``ObjectSet`` (detections, cells, contours, annotations) and a ``HeatmapLayer`` a
``TileScores``. Both subscribe to their model, so an analysis appending objects from a worker thread shows up live.

Many objects stay fluid the way established viewers do it: when zoomed in, the few thousand visible objects are
drawn as vectors (one path per class, built from flat coordinate arrays, reused while the view stays inside the
area it was built for); when zoomed out, pre-rendered raster tiles are drawn instead, rendered by numpy on a
worker thread per power-of-two level, kept in a byte-bounded cache and only re-rendered where objects changed.
Until a raster tile is ready its coarser parent is drawn scaled up, as for slide tiles.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from PySide6.QtCore import QLineF, QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import (QCheckBox, QFrame, QHBoxLayout, QLabel, QSizePolicy, QSlider,
                               QVBoxLayout, QWidget)

from core.overlays import ObjectSet, TileScores, colorize, colormap_lut, render_objects
from core.overlays.objects import UNCLASSIFIED_COLOR
from core.slides import TileCache

from .style import scrolling_panel
from .workers import JobQueue, Mailbox

#: Vectors are drawn only while a screen pixel covers at most this many level-0 pixels...
VECTOR_MAX_DS = 4.0
#: ...and at most this many objects with at most this many outline segments are visible; otherwise raster tiles.
VECTOR_LIMIT = 3000
SEGMENT_BUDGET = 12000
#: Vector outlines are prepared for the view plus this share of its size on every side, so small pans reuse them.
VECTOR_MARGIN = 0.15
RASTER_TILE = 512
RASTER_BASE_MAX_PX = 1024

_RENDER_QUEUE: JobQueue | None = None


def render_queue() -> JobQueue:
    """The one background thread that renders overlay rasters (separate from slide readers, so an overlay never
    delays the slide itself)."""
    global _RENDER_QUEUE
    if _RENDER_QUEUE is None:
        _RENDER_QUEUE = JobQueue(1, "overlay-render")
    return _RENDER_QUEUE


def qcolor(rgb, alpha: int = 255) -> QColor:
    return QColor(int(rgb[0]), int(rgb[1]), int(rgb[2]), alpha)


class OverlayLayer(QObject):
    """Base of everything drawn over the slide. Subclasses implement ``paint``; ``changed`` asks for a repaint."""

    changed = Signal()
    #: Stacking: the view keeps layers sorted by ``z`` (stable), so a layer added later with a lower ``z`` (an
    #: analysis' cells replacing their live version) still goes under one that must stay on top (the user's own
    #: annotations).
    z = 0

    def __init__(self, name: str, visible: bool = True, opacity: float = 1.0, parent: QObject | None = None):
        super().__init__(parent)
        self.name = name
        self._visible = bool(visible)
        self._opacity = float(opacity)
        self.view = None

    @property
    def visible(self) -> bool:
        return self._visible

    def set_visible(self, visible: bool) -> None:
        if bool(visible) != self._visible:
            self._visible = bool(visible)
            self.changed.emit()

    @property
    def opacity(self) -> float:
        return self._opacity

    def set_opacity(self, opacity: float) -> None:
        opacity = min(max(float(opacity), 0.0), 1.0)
        if opacity != self._opacity:
            self._opacity = opacity
            self.changed.emit()

    def attach(self, view) -> None:
        """Called by the view when the layer is added (the view gives the slide size)."""
        self.view = view

    def detach(self) -> None:
        self.view = None

    def view_changed(self, level0_rect: QRectF, scale: float) -> None:
        """The view moved; layers that prefetch work do it here."""

    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        """Draw onto the view. ``painter`` works in widget pixels; level-0 point p is at
        ``(p - level0_rect.topLeft()) * scale``. Opacity is already applied."""
        raise NotImplementedError

    def hit_test(self, x: float, y: float, tolerance: float = 0.0) -> int | None:
        """Index of the item at level-0 (x, y), or None (layers without items)."""
        return None

    def close(self) -> None:
        """Release threads and subscriptions."""


# ------------------------------------------------------------------------------------------------ vectors
class VectorLayer(OverlayLayer):
    """An ``ObjectSet`` drawn as class-coloured outlines (or dots and markers), vector or raster by zoom."""

    def __init__(self, objects: ObjectSet, name: str | None = None, *, visible: bool = True, opacity: float = 1.0,
                 line_width: float = 1.6, vector_limit: int = VECTOR_LIMIT,
                 cache_bytes: int = 96 * 2**20, parent: QObject | None = None) -> None:
        super().__init__(name or objects.name or "Objects", visible, opacity, parent)
        self.objects = objects
        self.line_width = float(line_width)
        self.vector_limit = int(vector_limit)
        self.hidden_classes: frozenset[int] = frozenset()
        self.last_mode = ""
        #: Raster tiles the last raster paint had to stand in for (0 when everything shown was up to date).
        self.missing_tiles = 0
        self._cache = TileCache(cache_bytes)
        self._changes: list[tuple[int, tuple | None]] = []
        self._log_floor = objects.version
        self._known_version = objects.version  # the newest change whose bounds the log holds
        self._lines = None
        self._mode_cache = None
        self._submitted: tuple = ()
        self._style = 0  # bumped when the same objects must look different (hidden classes)
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._drain)
        self._unsubscribe = objects.subscribe(lambda event: self._mail.post(("changed", event)))
        _line_array(np.zeros((1, 4)))  # imports pyqtgraph now rather than in the middle of a paint

    # ---------------------------------------------------------------------------------------------- model
    def set_hidden_classes(self, hidden) -> None:
        self.hidden_classes = frozenset(int(c) for c in hidden)
        self._record_change(self.objects.version, None, force=True)
        self.changed.emit()

    def _drain(self) -> None:
        for kind, payload in self._mail.take():
            if kind == "changed":
                self._record_change(payload.version, payload.bounds)
        self._submitted = ()  # what was asked for may have arrived or gone stale: ask afresh at the next paint
        self.changed.emit()

    def _record_change(self, version: int, bounds, force: bool = False) -> None:
        if force:  # everything must be redrawn though the objects did not change; old tiles stand in meanwhile
            self._style += 1
            self._lines = None
            self._submitted = ()
            return
        self._changes.append((version, bounds))
        self._known_version = max(self._known_version, version)
        if len(self._changes) > 1000:
            self._log_floor = self._changes[-500][0] - 1
            self._changes = self._changes[-500:]

    def _stale(self, key, rendered_version: int, current_version: int) -> bool:
        """Did any change after ``rendered_version`` touch this raster tile? A change whose notice has not reached
        the GUI thread yet (the snapshot is newer than the log) counts as touching everything."""
        if rendered_version < self._log_floor or current_version > self._known_version:
            return True
        x0, y0, x1, y1 = self._tile_rect(key)
        pad = 3 * 2 ** key[0]
        for version, b in reversed(self._changes):
            if version <= rendered_version:
                break
            if b is None or not (b[2] < x0 - pad or b[0] > x1 + pad or b[3] < y0 - pad or b[1] > y1 + pad):
                return True
        return False

    # ------------------------------------------------------------------------------------------- geometry
    def _extent(self) -> tuple[float, float]:
        if self.view is not None and self.view.source is not None:
            return self.view.source.size
        snap = self.objects.snapshot()
        if not len(snap):
            return 1.0, 1.0
        b = snap.bounds_of(np.arange(len(snap)))
        return float(np.nanmax(b[:, 2])), float(np.nanmax(b[:, 3]))

    def top_level(self) -> int:
        longest = max(self._extent())
        return max(0, math.ceil(math.log2(max(longest / RASTER_BASE_MAX_PX, 1.0))))

    def raster_level(self, ds: float) -> int:
        """The finest power-of-two level not finer than the view: raster tiles are drawn enlarged at most 2x."""
        return int(min(self.top_level(), max(0, math.ceil(math.log2(max(ds, 1.0)) - 1e-9))))

    @staticmethod
    def _tile_rect(key) -> tuple[float, float, float, float]:
        k, c, r = key
        span = RASTER_TILE * 2**k
        return c * span, r * span, (c + 1) * span, (r + 1) * span

    @staticmethod
    def _keys(level: int, x0: float, y0: float, x1: float, y1: float) -> list:
        span = RASTER_TILE * 2**level
        return [(level, c, r) for r in range(max(0, int(y0 // span)), max(0, int(math.ceil(y1 / span))))
                for c in range(max(0, int(x0 // span)), max(0, int(math.ceil(x1 / span))))]

    def mode_for(self, level0_rect: QRectF, scale: float) -> str:
        """'vector' or 'raster': what ``paint`` would do for this view."""
        if 1.0 / scale > VECTOR_MAX_DS:
            return "raster"
        r = level0_rect
        snap = self.objects.snapshot()
        key = (snap.version, r.left(), r.top(), r.right(), r.bottom(), self.hidden_classes)
        if self._mode_cache is not None and self._mode_cache[0] == key:
            return self._mode_cache[1]
        idx = snap.query(r.left(), r.top(), r.right(), r.bottom())
        if len(idx) > self.vector_limit:
            mode = "raster"
        else:
            mode = "vector" if snap.segment_counts(idx).sum() <= SEGMENT_BUDGET else "raster"
        self._mode_cache = (key, mode)
        return mode

    # ---------------------------------------------------------------------------------------------- paint
    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        snap = self.objects.snapshot()
        if not len(snap):
            self.last_mode = "empty"
            return
        if self.mode_for(level0_rect, scale) == "vector":
            self.last_mode = "vector"
            self._paint_vectors(painter, snap, level0_rect, scale)
        else:
            self.last_mode = "raster"
            self._paint_raster(painter, snap, level0_rect, scale)

    def _paint_vectors(self, painter: QPainter, snap, rect: QRectF, scale: float) -> None:
        """Outlines as one ``drawLines`` call per class over numpy-backed line arrays (Qt strokes a single path
        of thousands of sub-paths in super-linear time, separate lines in linear time)."""
        cached = self._lines
        x0, y0, x1, y1 = rect.left(), rect.top(), rect.right(), rect.bottom()
        if (cached is None or cached[0] != (snap.version, self.hidden_classes) or cached[1][0] > x0
                or cached[1][1] > y0 or cached[1][2] < x1 or cached[1][3] < y1):
            mx, my = (x1 - x0) * VECTOR_MARGIN, (y1 - y0) * VECTOR_MARGIN
            area = (x0 - mx, y0 - my, x1 + mx, y1 + my)
            cached = self._lines = ((snap.version, self.hidden_classes), area, self._build_lines(snap, area))
        lines, points = cached[2]
        quality = painter.testRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, quality)
        painter.translate(-x0 * scale, -y0 * scale)
        painter.scale(scale, scale)
        width = self.line_width if quality else 1.0  # 1-px cosmetic lines take Qt's fast path while moving
        for rgb, array in lines:
            pen = QPen(qcolor(rgb), width)
            pen.setCosmetic(True)
            # Square caps close the joints of outlines drawn as separate segments as round ones do, at a tenth of
            # the cost: antialiased round caps made a 12,000-segment redraw take ~70 ms instead of ~6 ms.
            pen.setCapStyle(Qt.PenCapStyle.SquareCap)
            painter.setPen(pen)
            _draw_lines(painter, array)
        for rgb, array in points:
            pen = QPen(qcolor(rgb), 8.0)
            pen.setCosmetic(True)
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            painter.setPen(pen)
            _draw_points(painter, array)
        painter.restore()

    def _build_lines(self, snap, area):
        idx = snap.query(*area)
        if self.hidden_classes and len(idx):
            idx = idx[~np.isin(snap.classes_of(idx), np.fromiter(self.hidden_classes, np.int64))]
        palette = np.vstack([snap.colors.reshape(-1, 3), [UNCLASSIFIED_COLOR]]).astype(np.uint8)
        lines, points = [], []
        if not len(idx):
            return lines, points
        a, b, owner = snap.segments(idx)
        if len(a):
            owner_cls = snap.classes_of(owner).astype(np.int64)
            for c in np.unique(owner_cls):
                m = owner_cls == c
                lines.append((palette[c], _line_array(np.column_stack([a[m], b[m]]))))
        is_point = snap.is_point(idx)
        if is_point.any():
            pts = idx[is_point]
            xy = snap.bounds_of(pts)[:, :2]
            cls = snap.classes_of(pts).astype(np.int64)
            for c in np.unique(cls):
                points.append((palette[c], _point_array(xy[cls == c])))
        return lines, points

    def _paint_raster(self, painter: QPainter, snap, rect: QRectF, scale: float) -> None:
        ds = 1.0 / scale
        level = self.raster_level(ds)
        top = self.top_level()
        x0, y0 = rect.left(), rect.top()
        keys = self._keys(level, x0, y0, rect.right(), rect.bottom())
        need = []
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        for key in keys:
            tx0, ty0, tx1, ty1 = self._tile_rect(key)
            target = QRectF(round((tx0 - x0) * scale), round((ty0 - y0) * scale), 0, 0)
            target.setRight(round((tx1 - x0) * scale))
            target.setBottom(round((ty1 - y0) * scale))
            entry = self._cache.get(key)
            if entry is not None:
                img, version, pixels, style = entry
                if style != self._style:
                    need.append(key)
                elif version != snap.version:
                    if self._stale(key, version, snap.version):
                        need.append(key)
                    else:
                        self._cache.put(key, (img, snap.version, pixels, style), nbytes=_entry_bytes(entry))
                if img is not None:
                    painter.drawImage(target, img, QRectF(img.rect()))
                continue
            need.append(key)
            for up in range(level + 1, top + 1):  # a coarser tile, enlarged, until this one is rendered
                shift = up - level
                parent = self._cache.get((up, key[1] >> shift, key[2] >> shift))
                if parent is None:
                    continue
                img = parent[0]
                if img is not None:
                    px0, py0, _, _ = self._tile_rect((up, key[1] >> shift, key[2] >> shift))
                    f = 2.0**up
                    src = QRectF((tx0 - px0) / f, (ty0 - py0) / f, (tx1 - tx0) / f, (ty1 - ty0) / f)
                    painter.drawImage(target, img, src)
                break
        painter.restore()
        self.missing_tiles = len(need)
        self._request(need, level, top, rect)

    def _request(self, need: list, level: int, top: int, rect: QRectF) -> None:
        jobs = [(0.0 + i * 1e-4, key) for i, key in enumerate(need)]
        for key in self._keys(top, 0, 0, *self._extent()):
            if key not in self._cache:
                jobs.append((0.5, key))
        if level + 1 <= top:
            for key in self._keys(level + 1, rect.left(), rect.top(), rect.right(), rect.bottom()):
                if key not in self._cache:
                    jobs.append((1.0, key))
        signature = tuple(k for _, k in jobs)
        if signature == self._submitted:
            return
        self._submitted = signature
        render_queue().submit(self, [(p, k, partial(self._render, k)) for p, k in jobs])

    def _render(self, key) -> None:
        """Worker thread: draw one raster tile from the current snapshot."""
        snap = self.objects.snapshot()
        style, hidden = self._style, self.hidden_classes
        level, col, row = key
        ds = 2.0**level
        arr = render_objects(snap, col * RASTER_TILE * ds, row * RASTER_TILE * ds, ds, RASTER_TILE, RASTER_TILE,
                             line_px=2 if level <= 2 else 1, hidden_classes=hidden)
        if arr.any():
            img = QImage(arr.data, RASTER_TILE, RASTER_TILE, 4 * RASTER_TILE,
                         QImage.Format.Format_ARGB32_Premultiplied)
            entry = (img, snap.version, arr, style)  # the array owns the pixels the image points at
        else:
            entry = (None, snap.version, None, style)
        self._cache.put(key, entry, nbytes=_entry_bytes(entry))
        self._mail.post(("tile", key))

    def is_complete(self) -> bool:
        """The last paint showed up-to-date pixels everywhere (vectors, or rendered raster tiles)."""
        return self.last_mode in ("vector", "empty") or (self.missing_tiles == 0 and render_queue().idle())

    def hit_test(self, x: float, y: float, tolerance: float = 0.0) -> int | None:
        i = self.objects.hit_test(x, y, tolerance)
        return None if i < 0 else i

    def close(self) -> None:
        self._unsubscribe()
        render_queue().cancel(self)


def _line_array(segments: np.ndarray):
    """(n, 4) x1, y1, x2, y2 -> something ``_draw_lines`` draws in one call."""
    try:
        from pyqtgraph.Qt.internals import PrimitiveArray  # numpy-backed QLineF array, no object per line

        array = PrimitiveArray(QLineF, 4)
        array.resize(len(segments))
        array.ndarray()[:] = segments
        return array
    except Exception:  # noqa: BLE001 - internal API of pyqtgraph: fall back to a list of QLineF
        return [QLineF(*row) for row in segments.tolist()]


def _point_array(xy: np.ndarray):
    try:
        from pyqtgraph.Qt.internals import PrimitiveArray

        array = PrimitiveArray(QPointF, 2)
        array.resize(len(xy))
        array.ndarray()[:] = xy
        return array
    except Exception:  # noqa: BLE001
        return [QPointF(*row) for row in xy.tolist()]


def _draw_lines(painter: QPainter, array) -> None:
    if isinstance(array, list):
        painter.drawLines(array)
    else:
        painter.drawLines(*array.drawargs())


def _draw_points(painter: QPainter, array) -> None:
    if isinstance(array, list):
        painter.drawPoints(array)
    else:
        painter.drawPoints(*array.drawargs())


def _entry_bytes(entry) -> int:
    return 64 if entry[2] is None else int(entry[2].nbytes) + 64


# ------------------------------------------------------------------------------------------------ heat map
class HeatmapLayer(OverlayLayer):
    """A ``TileScores`` as coloured tiles (one image pixel per grid cell, stretched, no smoothing)."""

    def __init__(self, scores: TileScores, name: str | None = None, *, cmap: str = "inferno",
                 vmin: float | None = 0.0, vmax: float | None = 1.0, visible: bool = True, opacity: float = 0.45,
                 fade: bool = False, parent: QObject | None = None) -> None:
        """``vmin``/``vmax`` None: the range of the values; ``fade``: low values more transparent."""
        super().__init__(name or scores.name or "Heat map", visible, opacity, parent)
        self.scores = scores
        self.cmap = cmap
        self.fade = fade
        self.vmin, self.vmax = vmin, vmax
        self._image: QImage | None = None
        self._pixels = None
        self._dirty = True
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._drain)
        self._unsubscribe = scores.subscribe(lambda bounds: self._mail.post(bounds))

    def _drain(self) -> None:
        self._mail.take()
        self._dirty = True
        self.changed.emit()

    def value_range(self) -> tuple[float, float]:
        lo, hi = self.scores.value_range()
        return (lo if self.vmin is None else self.vmin), (hi if self.vmax is None else self.vmax)

    def image(self) -> QImage | None:
        if self._dirty:
            grid = self.scores.grid_values()
            self._dirty = False
            if not grid.size:
                self._image = None
                return None
            lo, hi = self.value_range()
            self._pixels = np.ascontiguousarray(colorize(grid, colormap_lut(self.cmap), lo, hi, fade=self.fade))
            h, w = self._pixels.shape
            self._image = QImage(self._pixels.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied)
        return self._image

    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        img = self.image()
        if img is None:
            return
        p = self.scores.placement
        grid = QRectF(p.x0, p.y0, p.cols * p.cell_w, p.rows * p.cell_h)
        visible = grid.intersected(level0_rect)
        if self.view is not None and self.view.source is not None:  # edge tiles reach past the slide: clip there
            w, h = self.view.source.size
            visible = visible.intersected(QRectF(0, 0, w, h))
        if visible.isEmpty():
            return
        src = QRectF((visible.left() - p.x0) / p.cell_w, (visible.top() - p.y0) / p.cell_h,
                     visible.width() / p.cell_w, visible.height() / p.cell_h)
        target = QRectF((visible.left() - level0_rect.left()) * scale, (visible.top() - level0_rect.top()) * scale,
                        visible.width() * scale, visible.height() * scale)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(target, img, src)

    def hit_test(self, x: float, y: float, tolerance: float = 0.0) -> int | None:
        b = self.scores.boxes
        hit = np.nonzero((b[:, 0] <= x) & (x < b[:, 0] + b[:, 2]) & (b[:, 1] <= y) & (y < b[:, 1] + b[:, 3]))[0]
        return int(hit[-1]) if len(hit) else None

    def gradient(self, rect: QRectF) -> QLinearGradient:
        lut = colormap_lut(self.cmap)
        g = QLinearGradient(rect.topLeft(), rect.topRight())
        for t in np.linspace(0, 1, 9):
            g.setColorAt(float(t), qcolor(lut[int(round(t * (len(lut) - 1)))]))
        return g

    def close(self) -> None:
        self._unsubscribe()


# ------------------------------------------------------------------------------------------- layers panel
class _GradientBar(QWidget):
    def __init__(self, layer: HeatmapLayer, parent=None):
        super().__init__(parent)
        self.layer = layer
        self.setFixedHeight(10)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def paintEvent(self, event):  # noqa: N802
        p = QPainter(self)
        r = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.fillRect(r, QBrush(self.layer.gradient(r)))
        p.setPen(QColor(90, 90, 90))
        p.drawRect(r)


class _LayerRow(QFrame):
    """One layer: visibility, name, opacity, and its legend (class colours or colour scale)."""

    def __init__(self, layer: OverlayLayer, parent=None):
        super().__init__(parent)
        self.layer = layer
        self.setObjectName("layerRow")
        box = QVBoxLayout(self)
        box.setContentsMargins(8, 6, 8, 6)
        box.setSpacing(4)
        top = QHBoxLayout()
        self.check = QCheckBox()
        self.check.setChecked(layer.visible)
        self.check.setToolTip("Show or hide this layer")
        self.check.toggled.connect(layer.set_visible)
        top.addWidget(self.check, 0, Qt.AlignmentFlag.AlignTop)
        title = QLabel(layer.name)
        title.setWordWrap(True)
        title.setStyleSheet("font-weight: 600;")
        top.addWidget(title, 1)
        box.addLayout(top)
        opacity = QHBoxLayout()
        label = QLabel("Opacity")
        label.setStyleSheet("color: #9aa0aa;")
        opacity.addWidget(label)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setValue(int(round(layer.opacity * 100)))
        self.slider.setToolTip("Opacity")
        self.slider.valueChanged.connect(lambda v: layer.set_opacity(v / 100.0))
        opacity.addWidget(self.slider, 1)
        box.addLayout(opacity)
        self.class_checks: list[QCheckBox] = []
        if isinstance(layer, VectorLayer):
            names, colors = layer.objects.class_names, layer.objects.colors
            for i, (name, rgb) in enumerate(zip(names, colors)):
                chk = QCheckBox(name)
                chk.setChecked(i not in layer.hidden_classes)
                chk.setStyleSheet(f"QCheckBox::indicator:checked {{ background: rgb({rgb[0]},{rgb[1]},{rgb[2]});"
                                  " border: 1px solid #555; }")
                chk.toggled.connect(self._classes_changed)
                box.addWidget(chk)
                self.class_checks.append(chk)
        elif isinstance(layer, HeatmapLayer):
            lo, hi = layer.value_range()
            scale = QHBoxLayout()
            scale.addWidget(QLabel(f"{lo:.2g}"))
            scale.addWidget(_GradientBar(layer), 1)
            scale.addWidget(QLabel(f"{hi:.2g}"))
            box.addLayout(scale)
        layer.changed.connect(self._sync)

    def _classes_changed(self) -> None:
        hidden = [i for i, chk in enumerate(self.class_checks) if not chk.isChecked()]
        self.layer.set_hidden_classes(hidden)

    def _sync(self) -> None:
        if self.check.isChecked() != self.layer.visible:
            self.check.setChecked(self.layer.visible)
        value = int(round(self.layer.opacity * 100))
        if self.slider.value() != value:
            self.slider.setValue(value)


class LayersPanel(QWidget):
    """Lists the view's layers, topmost first, with visibility checkboxes and opacity sliders."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = None
        self._inner = QWidget()
        self._rows_box = QVBoxLayout(self._inner)
        self._rows_box.setContentsMargins(4, 4, 4, 4)
        self._rows_box.setSpacing(4)
        scrolling_panel(self, self._inner)
        self.rows: list[_LayerRow] = []
        self._empty = QLabel("No overlays.\nAnalyse the slide or load annotations to add layers.")
        self._empty.setWordWrap(True)
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setStyleSheet("color: #8a8f98; padding: 16px;")
        self.rebuild()

    def set_view(self, view) -> None:
        if self.view is not None:
            self.view.layersChanged.disconnect(self.rebuild)
        self.view = view
        view.layersChanged.connect(self.rebuild)
        self.rebuild()

    def rebuild(self) -> None:
        while self._rows_box.count():
            item = self._rows_box.takeAt(0)
            w = item.widget()
            if w is not None and w is not self._empty:
                w.hide()  # deleteLater waits for the event loop; the old row must not show meanwhile
                w.setParent(None)
                w.deleteLater()
        self.rows = []
        layers = list(self.view.layers()) if self.view is not None else []
        for layer in reversed(layers):
            row = _LayerRow(layer)
            self.rows.append(row)
            self._rows_box.addWidget(row)
        self._empty.setVisible(not layers)
        self._rows_box.addWidget(self._empty)
        self._rows_box.addStretch(1)
