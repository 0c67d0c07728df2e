"""Taking the reader to a cell: the view centred on it at high magnification, the cell outlined over the slide.

Both galleries (suspicious cells, similar cells) send the pathologist to cells; they share one outline layer per
window ("Selected cell" in the layers panel, so it can be hidden), which is put back when a new slide clears the
layers.
"""

from __future__ import annotations

import weakref

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF

from .layers import OverlayLayer
from .slide_view import downsample_for_magnification

#: The magnification a cell is shown at (unless the view is already closer).
FOCUS_MAGNIFICATION = 40


class CellHighlightLayer(OverlayLayer):
    """One cell's outline (or a box when only its crop is known), drawn in a colour no stain produces."""

    def __init__(self) -> None:
        super().__init__("Selected cell")
        self.outline: np.ndarray | None = None  # (n, 2) level-0 vertices
        self.box: tuple[float, float, float, float] | None = None  # level-0 x, y, w, h

    def set_target(self, outline: np.ndarray | None, box: tuple[float, float, float, float] | None) -> None:
        self.outline = None if outline is None or len(outline) < 3 else np.asarray(outline, np.float64)
        self.box = None if box is None else tuple(float(v) for v in box)
        self.changed.emit()

    def clear(self) -> None:
        self.set_target(None, None)

    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        ox, oy = level0_rect.left(), level0_rect.top()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if self.outline is not None:
            points = QPolygonF([QPointF((x - ox) * scale, (y - oy) * scale) for x, y in self.outline])
            for colour, width in ((QColor(0, 0, 0, 150), 4.5), (QColor(0, 230, 255), 2.2)):
                painter.setPen(QPen(colour, width))
                painter.drawPolygon(points)
        elif self.box is not None:
            x, y, w, h = self.box
            r = QRectF((x - ox) * scale, (y - oy) * scale, w * scale, h * scale)
            for colour, width in ((QColor(0, 0, 0, 150), 4.5), (QColor(0, 230, 255), 2.2)):
                pen = QPen(colour, width)
                pen.setStyle(Qt.PenStyle.DashLine)
                painter.setPen(pen)
                painter.drawRect(r)


class CellFocus(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.layer = CellHighlightLayer()

    def show(self, x: float, y: float, outline: np.ndarray | None = None,
             box: tuple[float, float, float, float] | None = None) -> bool:
        """Centre the view on level-0 (x, y) at ``FOCUS_MAGNIFICATION`` (or closer) and outline the cell."""
        view = self.window.view
        source = view.source
        if source is None:
            return False
        ds = min(view.downsample, downsample_for_magnification(FOCUS_MAGNIFICATION, source.mpp[0]))
        view.set_view(float(x), float(y), ds, motion=False)
        self.layer.set_target(outline, box)
        if self.layer not in view.layers():
            view.add_layer(self.layer)
        return True


_FOCUS: "weakref.WeakKeyDictionary[object, CellFocus]" = weakref.WeakKeyDictionary()


def focus_of(window) -> CellFocus:
    """The window's one ``CellFocus`` (made on first use)."""
    focus = _FOCUS.get(window)
    if focus is None:
        focus = _FOCUS[window] = CellFocus(window)
    return focus
