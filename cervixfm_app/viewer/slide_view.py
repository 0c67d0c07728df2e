"""The slide view: a widget that paints tiles itself, in level-0 coordinates, and never shows a blank slide.

A custom ``paintEvent`` rather than a QGraphicsScene: the view's whole state is a centre and a downsample (level-0
pixels per screen pixel), each frame draws only the tiles meeting the window, and nothing is kept per tile but a
QImage in the source's cache, so a frame costs the same on a 100,000-pixel slide as on a small one. Tile edges are
rounded to whole screen pixels from level-0 coordinates, so neighbouring tiles share their edges exactly and no
seam shows at any zoom.

A tile not yet read is drawn from what is in memory, best first: its four children of the next finer level
(zooming out), else its nearest cached ancestor enlarged (zooming in or panning), ending at the source's base
image, which is always there. So the slide appears at once, blurred where detail is still coming, and sharpens
without blanks or flashing. While the view moves, tiles are scaled with the fast filter; 180 ms after it stops the
frame is redrawn smoothly.
"""

from __future__ import annotations

import math
import time

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QWidget

from .scale_bar import paint_scale_bar
from .tile_source import TileSource

BACKGROUND = QColor(34, 36, 40)
#: Magnification presets of the View menu; 40x is 0.25 µm per screen pixel.
MAGNIFICATIONS = (5, 10, 20, 40)
#: How far past level 0 one may zoom (8 screen pixels per level-0 pixel).
MIN_DOWNSAMPLE = 1 / 8
SETTLE_MS = 180


def downsample_for_magnification(magnification: float, mpp: float) -> float:
    """Level-0 pixels per screen pixel that show the slide at ``magnification`` (40x = 0.25 µm/px)."""
    return (10.0 / magnification) / mpp


class SlideView(QWidget):
    """Shows a ``TileSource`` and its overlay layers.

    Signals: ``viewChanged(visible level-0 rect, zoom)`` with zoom in screen pixels per level-0 pixel;
    ``clicked(level-0 point)`` for a click without drag; ``cursorMoved(level-0 point, inside)``; ``layersChanged``;
    ``readFailed(message)`` when a region of the slide is damaged; ``framePainted(milliseconds)``.
    """

    viewChanged = Signal(QRectF, float)
    clicked = Signal(QPointF)
    cursorMoved = Signal(QPointF, bool)
    layersChanged = Signal()
    readFailed = Signal(str)
    framePainted = Signal(float)
    toolChanged = Signal(object)  # the new ViewTool, or None for navigation

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.setMinimumSize(200, 150)
        self._source: TileSource | None = None
        self._cx = self._cy = 0.0
        self._ds = 1.0
        self._fit_pending = False
        self._layers: list = []
        self._scale_bar = True
        self._corner: QWidget | None = None
        self._moving = False
        self._press: QPointF | None = None
        self._last: QPointF | None = None
        self._dragged = False
        self._pan_button = Qt.MouseButton.LeftButton
        self.missing_tiles = 0
        self.paint_count = 0
        self._generation = 0  # bumped by every view change; a paint records the one it showed
        self._painted_generation = -1
        self.last_paint_ms = 0.0
        self._tool = None
        self._tool_owns_press = False
        self._request_timer = QTimer(self, singleShot=True, interval=0, timeout=self._issue_requests)
        self._settle_timer = QTimer(self, singleShot=True, interval=SETTLE_MS, timeout=self._settle)
        self.empty_text = "Open a slide with File › Open, or drop a slide file here."

    # ------------------------------------------------------------------------------------------------ source
    @property
    def source(self) -> TileSource | None:
        return self._source

    def set_source(self, source: TileSource | None, keep_view: bool = False) -> None:
        """Show another slide (the caller closes the previous source). ``keep_view`` keeps centre and zoom."""
        old = self._source
        if old is not None:
            old.tilesArrived.disconnect(self._tiles_arrived)
            old.readFailed.disconnect(self.readFailed)
        self._source = source
        if source is not None:
            source.tilesArrived.connect(self._tiles_arrived)
            source.readFailed.connect(self.readFailed)
            if not keep_view:
                self.zoom_to_fit()
        self._changed(motion=False)

    def _tiles_arrived(self) -> None:
        self.update()

    # ------------------------------------------------------------------------------------------ view state
    @property
    def downsample(self) -> float:
        """Level-0 pixels per screen pixel."""
        return self._ds

    @property
    def zoom(self) -> float:
        """Screen pixels per level-0 pixel."""
        return 1.0 / self._ds

    @property
    def center(self) -> QPointF:
        return QPointF(self._cx, self._cy)

    def magnification(self) -> float:
        """The equivalent objective magnification of the current zoom (10 µm / screen-pixel size)."""
        if self._source is None:
            return 0.0
        return 10.0 / (self._source.mpp[0] * self._ds)

    def origin(self) -> tuple[float, float]:
        """Level-0 point at the widget's top-left corner."""
        return self._cx - self.width() * self._ds / 2, self._cy - self.height() * self._ds / 2

    def visible_rect(self) -> QRectF:
        x0, y0 = self.origin()
        return QRectF(x0, y0, self.width() * self._ds, self.height() * self._ds)

    def map_to_slide(self, pos: QPointF) -> QPointF:
        x0, y0 = self.origin()
        return QPointF(x0 + pos.x() * self._ds, y0 + pos.y() * self._ds)

    def map_from_slide(self, point: QPointF) -> QPointF:
        x0, y0 = self.origin()
        return QPointF((point.x() - x0) / self._ds, (point.y() - y0) / self._ds)

    def fit_downsample(self) -> float:
        if self._source is None or self.width() < 2 or self.height() < 2:
            return 1.0
        w, h = self._source.size
        return max(w / self.width(), h / self.height()) * 1.04

    def _limits(self) -> tuple[float, float]:
        return MIN_DOWNSAMPLE, max(self.fit_downsample() * 1.5, 1.0)

    def set_view(self, cx: float, cy: float, ds: float, motion: bool = True) -> None:
        """Centre (level-0) and downsample; clamped so the slide stays in reach."""
        lo, hi = self._limits()
        self._ds = min(max(float(ds), lo), hi)
        if self._source is not None:
            w, h = self._source.size
            cx, cy = min(max(cx, 0.0), float(w)), min(max(cy, 0.0), float(h))
        self._cx, self._cy = float(cx), float(cy)
        self._changed(motion)

    def show_region(self, x: float, y: float, ds: float) -> None:
        """Put level-0 point (x, y) at the widget's top-left corner at downsample ``ds``."""
        self.set_view(x + self.width() * ds / 2, y + self.height() * ds / 2, ds, motion=False)

    def center_on(self, x: float, y: float) -> None:
        self.set_view(x, y, self._ds)

    def zoom_to_fit(self) -> None:
        if self._source is None:
            return
        if self.width() < 2 or not self.isVisible():
            self._fit_pending = True
        w, h = self._source.size
        self.set_view(w / 2, h / 2, self.fit_downsample(), motion=False)

    def set_downsample(self, ds: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the level-0 point under ``anchor`` (widget pixels; default the centre) where it is."""
        if anchor is None:
            self.set_view(self._cx, self._cy, ds)
            return
        lo, hi = self._limits()
        ds = min(max(float(ds), lo), hi)
        p = self.map_to_slide(anchor)
        x0, y0 = p.x() - anchor.x() * ds, p.y() - anchor.y() * ds
        self.set_view(x0 + self.width() * ds / 2, y0 + self.height() * ds / 2, ds)

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """``factor`` > 1 zooms in."""
        self.set_downsample(self._ds / factor, anchor)

    def set_magnification(self, magnification: float) -> None:
        if self._source is not None:
            self.set_downsample(downsample_for_magnification(magnification, self._source.mpp[0]))

    def pan_pixels(self, dx: float, dy: float) -> None:
        """Move the content by (dx, dy) screen pixels (a drag to the right shows what is left of the view)."""
        self.set_view(self._cx - dx * self._ds, self._cy - dy * self._ds, self._ds)

    def _changed(self, motion: bool = True) -> None:
        self._generation += 1
        if motion:
            self._moving = True
            self._settle_timer.start()
        self.update()
        if not self._request_timer.isActive():
            self._request_timer.start()
        if self._source is not None:
            self.viewChanged.emit(self.visible_rect(), self.zoom)
        if self._corner is not None:
            self._corner.update()

    def _settle(self) -> None:
        self._moving = False
        self.update()

    def _issue_requests(self) -> None:
        src = self._source
        if src is None:
            return
        r = self.visible_rect()
        src.request_view(r.left(), r.top(), r.right(), r.bottom(), self._ds / self.devicePixelRatioF())
        for layer in self._layers:
            if layer.visible:
                layer.view_changed(r, self.zoom)

    def is_complete(self) -> bool:
        """The current view has been painted with every visible tile at full detail."""
        return (self._source is not None and self._painted_generation == self._generation
                and self.missing_tiles == 0)

    # ---------------------------------------------------------------------------------------------- layers
    def layers(self) -> tuple:
        return tuple(self._layers)

    def add_layer(self, layer) -> None:
        """Add on top of the layers with the same or a lower ``z`` (``OverlayLayer.z``)."""
        z = getattr(layer, "z", 0)
        at = len(self._layers)
        while at > 0 and getattr(self._layers[at - 1], "z", 0) > z:
            at -= 1
        self._layers.insert(at, layer)
        layer.attach(self)
        layer.changed.connect(self.update)
        self.layersChanged.emit()
        self.update()

    def remove_layer(self, layer) -> None:
        if layer in self._layers:
            self._layers.remove(layer)
            layer.changed.disconnect(self.update)
            layer.detach()
            self.layersChanged.emit()
            self.update()

    def clear_layers(self) -> None:
        for layer in list(self._layers):
            self.remove_layer(layer)
            layer.close()

    def layer_at(self, point: QPointF, tolerance_px: float = 4.0):
        """(layer, index) of the topmost visible layer item under level-0 ``point``, or (None, None)."""
        for layer in reversed(self._layers):
            if layer.visible:
                hit = layer.hit_test(point.x(), point.y(), tolerance_px * self._ds)
                if hit is not None:
                    return layer, hit
        return None, None

    # -------------------------------------------------------------------------------------------- decorations
    def set_scale_bar_visible(self, visible: bool) -> None:
        self._scale_bar = bool(visible)
        self.update()

    def scale_bar_visible(self) -> bool:
        return self._scale_bar

    def set_corner_widget(self, widget: QWidget | None) -> None:
        """Keep ``widget`` (the overview) floating in the top-right corner."""
        self._corner = widget
        if widget is not None:
            widget.setParent(self)
            self.place_corner_widget()

    def place_corner_widget(self) -> None:
        """Re-place the corner widget (after its size hint changed)."""
        if self._corner is not None:
            hint = self._corner.sizeHint()
            self._corner.setGeometry(self.width() - hint.width() - 10, 10, hint.width(), hint.height())

    # ------------------------------------------------------------------------------------------------ paint
    def _target(self, rect, ox: float, oy: float) -> QRectF:
        ds = self._ds
        x0, y0 = round((rect[0] - ox) / ds), round((rect[1] - oy) / ds)
        return QRectF(x0, y0, round((rect[2] - ox) / ds) - x0, round((rect[3] - oy) / ds) - y0)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        start = time.perf_counter()
        cpu_start = time.thread_time()
        p = QPainter(self)
        p.fillRect(self.rect(), BACKGROUND)
        src = self._source
        if src is None:
            p.setPen(QColor(150, 155, 165))
            font = QFont(p.font())
            font.setPointSizeF(11)
            p.setFont(font)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.empty_text)
            p.end()
            return
        ox, oy = self.origin()
        ds = self._ds
        w, h = src.size
        vx0, vy0 = max(0.0, ox), max(0.0, oy)
        vx1, vy1 = min(float(w), ox + self.width() * ds), min(float(h), oy + self.height() * ds)
        slide_rect = self._target((0, 0, w, h), ox, oy)
        p.setPen(QPen(QColor(0, 0, 0, 90), 3))
        p.drawRect(slide_rect.adjusted(-1, -1, 1, 1))
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, not self._moving)
        missing = 0
        if vx1 > vx0 and vy1 > vy0:
            level = src.level_for(ds / self.devicePixelRatioF())
            for key in src.keys_in(level, vx0, vy0, vx1, vy1):
                target = self._target(src.tile_rect(key), ox, oy)
                img = src.tile(key)
                if img is not None:
                    p.drawImage(target, img, QRectF(img.rect()))
                else:
                    missing += 1
                    self._paint_fallback(p, src, key, target, ox, oy)
        self.missing_tiles = missing
        self._painted_generation = self._generation
        rect = QRectF(ox, oy, self.width() * ds, self.height() * ds)
        quality = not self._moving
        for layer in self._layers:
            if layer.visible and layer.opacity > 0:
                p.save()
                p.setOpacity(layer.opacity)
                p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, quality)
                layer.paint(p, rect, 1.0 / ds)
                p.restore()
        if self._tool is not None:
            p.save()
            self._tool.paint(p, rect, 1.0 / ds)
            p.restore()
        if self._scale_bar:
            paint_scale_bar(p, QRectF(self.rect()), src.mpp[0] * ds, assumed=src.slide.mpp_source == "fallback")
        p.end()
        if missing and not self._request_timer.isActive() and src.is_idle():
            self._request_timer.start()  # something was evicted or never asked for: ask again
        self.paint_count += 1
        self.last_paint_ms = (time.perf_counter() - start) * 1000
        self.last_paint_cpu_ms = (time.thread_time() - cpu_start) * 1000
        self.framePainted.emit(self.last_paint_ms)

    def _paint_fallback(self, p: QPainter, src: TileSource, key, target: QRectF, ox: float, oy: float) -> None:
        level, col, row = key
        if level > 0:  # zooming out: the four finer tiles, if all are here
            cols, rows = src.grid(level - 1)
            kids = [(level - 1, 2 * col + i, 2 * row + j) for j in (0, 1) for i in (0, 1)
                    if 2 * col + i < cols and 2 * row + j < rows]
            images = [src.cache.get(k) for k in kids]
            if all(img is not None for img in images):
                for k, img in zip(kids, images):
                    p.drawImage(self._target(src.tile_rect(k), ox, oy), img, QRectF(img.rect()))
                return
        x0, y0, x1, y1 = src.tile_rect(key)
        p.save()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, not self._moving)
        for up in range(level + 1, src.top_level + 1):
            shift = up - level
            parent = (up, col >> shift, row >> shift)
            img = src.tile(parent)
            if img is None:
                continue
            px0, py0, _, _ = src.tile_rect(parent)
            f = float(2**up)
            p.drawImage(target, img, QRectF((x0 - px0) / f, (y0 - py0) / f, (x1 - x0) / f, (y1 - y0) / f))
            break
        p.restore()

    # ----------------------------------------------------------------------------------------------- events
    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self.place_corner_widget()
        if self._fit_pending and self._source is not None and self.width() >= 2:
            self._fit_pending = False
            self.zoom_to_fit()
        else:
            self._changed(motion=False)

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if self._fit_pending and self._source is not None:
            self._fit_pending = False
            self.zoom_to_fit()

    def wheelEvent(self, event) -> None:  # noqa: N802
        delta = event.angleDelta().y() or event.angleDelta().x()
        if not delta:
            return
        self.zoom_by(2.0 ** (delta / 240.0), event.position())  # one notch = x1.41
        event.accept()

    # ------------------------------------------------------------------------------------------------- tools
    @property
    def tool(self):
        return self._tool

    def set_tool(self, tool) -> None:
        """Make ``tool`` (a ``ViewTool``, or None for plain navigation) the mouse mode; the previous one is
        deactivated first, so a half-drawn shape never outlives its tool."""
        if tool is self._tool:
            return
        old, self._tool = self._tool, None
        self._tool_owns_press = False
        if old is not None:
            old.deactivate()
        self._tool = tool
        if tool is not None:
            tool.activate(self)
            self.setCursor(tool.cursor)
        else:
            self.unsetCursor()
        self.update()
        self.toolChanged.emit(tool)

    def _tool_event(self, handler: str, event) -> bool:
        if self._tool is None or self._source is None:
            return False
        return bool(getattr(self._tool, handler)(self.map_to_slide(event.position()), event))

    def mousePressEvent(self, event) -> None:  # noqa: N802
        button = event.button()
        if button == Qt.MouseButton.LeftButton and self._tool_event("press", event):
            self._tool_owns_press = True
            event.accept()
            return
        if button in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
            # the middle button always pans, whatever tool is active
            self._press = self._last = event.position()
            self._pan_button = button
            self._dragged = button == Qt.MouseButton.MiddleButton
            event.accept()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        pos = event.position()
        if self._source is not None:
            self.cursorMoved.emit(self.map_to_slide(pos), True)
        if self._tool_owns_press or (self._press is None and self._tool is not None):
            self._tool_event("move", event)
            if self._tool_owns_press:
                return
        if self._press is not None and event.buttons() & self._pan_button:
            if not self._dragged and (pos - self._press).manhattanLength() > 3:
                self._dragged = True
            if self._dragged:
                self.setCursor(Qt.CursorShape.ClosedHandCursor)
                d = pos - self._last
                self._last = pos
                self.pan_pixels(d.x(), d.y())

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._tool_owns_press and event.button() == Qt.MouseButton.LeftButton:
            self._tool_owns_press = False
            self._tool_event("release", event)
            return
        if self._press is not None and event.button() == self._pan_button:
            if not self._dragged and self._source is not None:
                point = self.map_to_slide(event.position())
                if self._tool is None or not self._tool.click(point, event):
                    self.clicked.emit(point)
            self._press = None
            self._dragged = False
            if self._tool is not None:
                self.setCursor(self._tool.cursor)
            else:
                self.unsetCursor()

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            if self._tool_event("double_click", event):
                return
            self.zoom_by(2.0, event.position())

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.cursorMoved.emit(QPointF(math.nan, math.nan), False)
        super().leaveEvent(event)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if self._tool is not None and self._tool.key(event):
            event.accept()
            return
        key = event.key()
        step_x, step_y = self.width() / 5, self.height() / 5
        k = Qt.Key
        if key == k.Key_Left:
            self.pan_pixels(step_x, 0)
        elif key == k.Key_Right:
            self.pan_pixels(-step_x, 0)
        elif key == k.Key_Up:
            self.pan_pixels(0, step_y)
        elif key == k.Key_Down:
            self.pan_pixels(0, -step_y)
        elif key in (k.Key_Plus, k.Key_Equal):
            self.zoom_by(2.0)
        elif key in (k.Key_Minus, k.Key_Underscore):
            self.zoom_by(0.5)
        elif key in (k.Key_0, k.Key_Home):
            self.zoom_to_fit()
        else:
            super().keyPressEvent(event)
            return
        event.accept()
