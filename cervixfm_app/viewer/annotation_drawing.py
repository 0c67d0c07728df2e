"""The mouse modes that draw and edit annotations: Select/Edit, Rectangle, Polygon (clicked or freehand), Point.

Each is a ``tools.ViewTool``: the view hands it presses, moves and keys in level-0 pixels and it draws its own
feedback (rubber band, polygon in progress, the shape being moved) with its size in µm, because a pathologist
judges a region by its size on the glass, not in pixels. A tool never touches the store itself: it asks its
controller (``AnnotationTools``) to add, select or move objects, so every edit goes through one place that names
the undo step and knows the current class.
"""

from __future__ import annotations

import math

import shapely
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen, QPolygonF
from shapely.affinity import translate
from shapely.geometry import Point, Polygon, box

from .annotation_layer import draw_geometry
from .tools import ViewTool

#: A press that moves more than this many screen pixels is a drag (freehand, move), not a click.
DRAG_PX = 4.0
#: Freehand outlines keep a vertex every this many screen pixels, then are simplified to half a screen pixel.
FREEHAND_STEP_PX = 2.0
#: Clicks within this many screen pixels of an object select it.
PICK_PX = 5.0
FEEDBACK_DEFAULT = QColor(255, 215, 0)


# ------------------------------------------------------------------------------------------------ measurements
def format_length(um: float) -> str:
    if um >= 1000:
        return f"{um / 1000:.2f} mm"
    return f"{um:.1f} µm" if um < 100 else f"{um:,.0f} µm"


def format_area(um2: float) -> str:
    if um2 >= 1e6:
        return f"{um2 / 1e6:.3f} mm²"
    return f"{um2:.1f} µm²" if um2 < 100 else f"{um2:,.0f} µm²"


def shape_kind(geom) -> str:
    """What a person calls the shape: Rectangle, Polygon, Point, Line, ... (for lists and undo labels)."""
    kind = geom.geom_type
    if kind == "Polygon" and not geom.interiors and len(geom.exterior.coords) == 5 and geom.equals(box(*geom.bounds)):
        return "Rectangle"
    return {"Polygon": "Polygon", "MultiPolygon": "Polygon", "Point": "Point", "MultiPoint": "Points",
            "LineString": "Line", "MultiLineString": "Line", "LinearRing": "Line"}.get(kind, kind)


def size_text(geom, mpp: tuple[float, float]) -> str:
    """Area for shapes with one, length for lines, nothing for points."""
    mx, my = mpp
    dim = shapely.get_dimensions(geom)
    if dim >= 2:
        return format_area(geom.area * mx * my)
    if dim == 1:
        return format_length(geom.length * math.sqrt(mx * my))
    return ""


def size_value(geom, mpp: tuple[float, float]) -> float:
    """The number behind ``size_text`` (µm² or µm; 0 for points), for sorting."""
    mx, my = mpp
    dim = shapely.get_dimensions(geom)
    if dim >= 2:
        return geom.area * mx * my
    if dim == 1:
        return geom.length * math.sqrt(mx * my)
    return 0.0


def paint_label(painter: QPainter, anchor: QPointF, text: str) -> None:
    """A small readable caption (light text on a dark box) just below-right of ``anchor`` (widget pixels), moved
    to the other side of it when it would leave the view."""
    painter.save()
    font = QFont(painter.font())
    font.setPointSizeF(9.5)
    painter.setFont(font)
    metrics = QFontMetricsF(font)
    w, h = metrics.horizontalAdvance(text) + 10, metrics.height() + 4
    area = QRectF(painter.viewport())
    x = anchor.x() + 14 if anchor.x() + 14 + w <= area.right() else anchor.x() - 14 - w
    y = anchor.y() + 14 if anchor.y() + 14 + h <= area.bottom() else anchor.y() - 14 - h
    r = QRectF(max(area.left(), x), max(area.top(), y), w, h)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(20, 22, 26, 215))
    painter.drawRoundedRect(r, 3, 3)
    painter.setPen(QColor(240, 242, 245))
    painter.drawText(r, Qt.AlignmentFlag.AlignCenter, text)
    painter.restore()


def _screen_distance(a: QPointF, b: QPointF) -> float:
    d = a - b
    return math.hypot(d.x(), d.y())


class _ControllerTool(ViewTool):
    """A tool that works for an ``AnnotationTools`` controller."""

    def __init__(self, controller) -> None:
        super().__init__()
        self.controller = controller

    def _feedback_pen(self, dashed: bool = False) -> QPen:
        cls = self.controller.current_class
        pen = QPen(QColor(*cls.color) if cls is not None else FEEDBACK_DEFAULT, 2.0)
        pen.setCosmetic(True)
        if dashed:
            pen.setStyle(Qt.PenStyle.DashLine)
        return pen

    def _mpp(self) -> tuple[float, float]:
        return self.controller.mpp()


# ---------------------------------------------------------------------------------------------------- select
class SelectTool(_ControllerTool):
    """Click an object to select it (Shift/Ctrl-click adds or removes), drag a selected object to move the
    selection, click empty slide to clear it; a drag on empty slide still pans."""

    name = "Select"
    cursor = Qt.CursorShape.ArrowCursor

    def __init__(self, controller) -> None:
        super().__init__(controller)
        self._start: QPointF | None = None
        self._start_px: QPointF | None = None
        self._offset: tuple[float, float] | None = None

    def deactivate(self) -> None:
        self._reset()
        super().deactivate()

    def _reset(self) -> None:
        self._start = self._start_px = None
        self._offset = None

    def press(self, point: QPointF, event) -> bool:
        hit = self.controller.object_at(point)
        if hit is None:
            return False
        mods = event.modifiers()
        if mods & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier):
            self.controller.toggle_selected(hit.id)
            return True
        if hit.id not in self.controller.selection:
            self.controller.set_selection([hit.id])
        self._start, self._start_px = point, event.position()
        return True

    def move(self, point: QPointF, event) -> bool:
        if self._start is None:
            if self.view is not None:  # hover: show what a press would grab
                over = self.controller.object_at(point) is not None
                self.view.setCursor(Qt.CursorShape.OpenHandCursor if over else self.cursor)
            return False
        if self._offset is None and _screen_distance(event.position(), self._start_px) <= DRAG_PX:
            return True
        self._offset = (point.x() - self._start.x(), point.y() - self._start.y())
        self.update()
        return True

    def release(self, point: QPointF, event) -> bool:
        offset = self._offset
        self._reset()
        if offset is not None and (offset[0] or offset[1]):
            self.controller.move_selection(*offset)
        self.update()
        return True

    def click(self, point: QPointF, event) -> bool:
        self.controller.set_selection([])
        return False  # the view's ``clicked`` still fires: a click on bare slide may mean something elsewhere

    def key(self, event) -> bool:
        if event.key() == Qt.Key.Key_Escape and (self._start is not None or self.controller.selection):
            self._reset()
            self.controller.set_selection([])
            self.update()
            return True
        return False

    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        if self._offset is None:
            return
        dx, dy = self._offset
        pen = QPen(QColor(255, 255, 255), 2.0, Qt.PenStyle.DashLine)
        for a in self.controller.selected_objects():
            draw_geometry(painter, translate(a.geometry, dx, dy), level0_rect, scale, pen)
        first = self.controller.selected_objects()[:1]
        if first:
            x0, y0, _, _ = first[0].bounds
            mx, my = self._mpp()
            anchor = QPointF((x0 + dx - level0_rect.left()) * scale, (y0 + dy - level0_rect.top()) * scale)
            paint_label(painter, anchor, f"moved {format_length(math.hypot(dx * mx, dy * my))}")


# ------------------------------------------------------------------------------------------------- rectangle
class RectangleTool(_ControllerTool):
    """Press, drag, release: a rectangle (Shift: a square). Its width, height and area are shown while dragging."""

    name = "Rectangle"

    def __init__(self, controller) -> None:
        super().__init__(controller)
        self._start: QPointF | None = None
        self._end: QPointF | None = None

    def deactivate(self) -> None:
        self._start = self._end = None
        super().deactivate()

    def press(self, point: QPointF, event) -> bool:
        self._start = self._end = self.controller.clamp(point)
        return True

    def move(self, point: QPointF, event) -> bool:
        if self._start is None:
            return False
        end = self.controller.clamp(point)
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            dx, dy = end.x() - self._start.x(), end.y() - self._start.y()
            side = max(abs(dx), abs(dy))
            end = self.controller.clamp(QPointF(self._start.x() + math.copysign(side, dx or 1),
                                                self._start.y() + math.copysign(side, dy or 1)))
        self._end = end
        self.update()
        return True

    def release(self, point: QPointF, event) -> bool:
        if self._start is None:
            return False
        if not (event.modifiers() & Qt.KeyboardModifier.ShiftModifier):
            self._end = self.controller.clamp(point)
        rect = self._rect()
        self._start = self._end = None
        self.update()
        min_side = DRAG_PX * (self.view.downsample if self.view is not None else 1.0)
        if rect is not None and rect.width() >= min_side and rect.height() >= min_side:
            self.controller.add_drawn(box(rect.left(), rect.top(), rect.right(), rect.bottom()), "rectangle")
        return True

    def key(self, event) -> bool:
        if event.key() == Qt.Key.Key_Escape and self._start is not None:
            self._start = self._end = None
            self.update()
            return True
        return False

    def _rect(self) -> QRectF | None:
        if self._start is None or self._end is None:
            return None
        return QRectF(self._start, self._end).normalized()

    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        rect = self._rect()
        if rect is None or rect.isNull():
            return
        geom = box(rect.left(), rect.top(), rect.right(), rect.bottom())
        draw_geometry(painter, geom, level0_rect, scale, self._feedback_pen(dashed=True))
        mx, my = self._mpp()
        text = (f"{format_length(rect.width() * mx)} × {format_length(rect.height() * my)}   "
                f"{format_area(rect.width() * rect.height() * mx * my)}")
        corner = QPointF((rect.right() - level0_rect.left()) * scale, (rect.bottom() - level0_rect.top()) * scale)
        paint_label(painter, corner, text)


# --------------------------------------------------------------------------------------------------- polygon
class PolygonTool(_ControllerTool):
    """Click the vertices; double-click or Enter closes the polygon, Backspace removes the last vertex, Esc
    cancels. Dragging with the button held draws freehand (released: closed)."""

    name = "Polygon"

    def __init__(self, controller) -> None:
        super().__init__(controller)
        self.vertices: list[QPointF] = []
        self._hover: QPointF | None = None
        self._press_px: QPointF | None = None
        self._press_point: QPointF | None = None
        self._freehand = False
        self._last_px: QPointF | None = None

    def deactivate(self) -> None:
        self.cancel()
        super().deactivate()

    def cancel(self) -> None:
        self.vertices = []
        self._hover = self._press_px = self._press_point = self._last_px = None
        self._freehand = False
        self.update()

    def press(self, point: QPointF, event) -> bool:
        self._press_px, self._press_point = event.position(), self.controller.clamp(point)
        self._freehand = False
        return True

    def move(self, point: QPointF, event) -> bool:
        point = self.controller.clamp(point)
        if self._press_px is None:  # hovering: rubber segment from the last vertex
            self._hover = point
            if self.vertices:
                self.update()
            return bool(self.vertices)
        pos = event.position()
        if not self._freehand and _screen_distance(pos, self._press_px) > DRAG_PX:
            self._freehand = True
            self.vertices.append(self._press_point)
            self._last_px = self._press_px
        if self._freehand and _screen_distance(pos, self._last_px) >= FREEHAND_STEP_PX:
            self.vertices.append(point)
            self._last_px = pos
            self.update()
        return True

    def release(self, point: QPointF, event) -> bool:
        if self._press_px is None:
            return False
        freehand, clicked = self._freehand, self._press_point
        self._press_px = self._press_point = self._last_px = None
        self._freehand = False
        if freehand:
            self.vertices.append(self.controller.clamp(point))
            self.finish(simplify=True)
            return True
        if not self.vertices or _screen_distance(self.to_screen(clicked), self.to_screen(self.vertices[-1])) > 1.0:
            self.vertices.append(clicked)
        self.update()
        return True

    def double_click(self, point: QPointF, event) -> bool:
        self.finish()
        return True  # never zoom in the middle of drawing

    def key(self, event) -> bool:
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.vertices:
            self.finish()
            return True
        if key == Qt.Key.Key_Backspace and self.vertices:
            self.vertices.pop()
            self.update()
            return True
        if key == Qt.Key.Key_Escape and self.vertices:
            self.cancel()
            return True
        return False

    def finish(self, simplify: bool = False) -> None:
        """Close the polygon and hand it over. With fewer than 3 distinct vertices a clicked polygon stays open
        (an early double-click must not throw the work away) and a tiny freehand scribble is dropped."""
        coords = [(p.x(), p.y()) for p in self.vertices]
        if len(set(coords)) < 3:
            if simplify:
                self.cancel()
            elif coords:
                self.controller.message("A polygon needs at least 3 points: keep clicking, then double-click or "
                                        "press Enter (Esc cancels).")
            return
        self.cancel()
        ds = self.view.downsample if self.view is not None else 1.0
        polygon = Polygon(coords)
        if simplify:
            polygon = polygon.simplify(0.5 * ds, preserve_topology=False)
        self.controller.add_drawn(polygon, "polygon")

    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        if not self.vertices:
            return
        pts = list(self.vertices)
        if self._hover is not None and not self._freehand and self._press_px is None:
            pts.append(self._hover)
        x0, y0 = level0_rect.left(), level0_rect.top()
        screen = QPolygonF([QPointF((p.x() - x0) * scale, (p.y() - y0) * scale) for p in pts])
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(self._feedback_pen())
        painter.drawPolyline(screen)
        if len(pts) >= 3:
            painter.setPen(self._feedback_pen(dashed=True))
            painter.drawLine(screen[len(screen) - 1], screen[0])
        if not self._freehand:
            painter.setPen(QPen(QColor(0, 0, 0, 200), 1.0))
            painter.setBrush(QColor(255, 255, 255))
            for i in range(len(self.vertices)):
                painter.drawEllipse(screen[i], 3.0, 3.0)
        painter.restore()
        mx, my = self._mpp()
        parts = []
        if len(pts) >= 3:
            parts.append(format_area(Polygon([(p.x(), p.y()) for p in pts]).area * mx * my))
        if len(pts) >= 2:
            a, b = pts[-2], pts[-1]
            parts.append(format_length(math.hypot((b.x() - a.x()) * mx, (b.y() - a.y()) * my)))
        if parts:
            paint_label(painter, screen[len(screen) - 1], "   ".join(parts))


# ----------------------------------------------------------------------------------------------------- point
class PointTool(_ControllerTool):
    """A click places a point annotation (e.g. marking one cell); a drag still pans."""

    name = "Point"

    def click(self, point: QPointF, event) -> bool:
        w, h = self.controller.slide_size()
        if not (0 <= point.x() <= w and 0 <= point.y() <= h):
            self.controller.message("Points must be placed on the slide.")
            return True
        self.controller.add_drawn(Point(point.x(), point.y()), "point")
        return True
