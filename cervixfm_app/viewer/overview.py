"""The overview (minimap): the whole slide small, with the rectangle the main view shows; click or drag to jump.

On a slide 100,000 pixels wide the main view at 40x shows about 1% of the width, so without a map a reader
loses their place; established viewers without one get exactly that complaint. The thumbnail is the tile
source's base image, already in memory, so the overview costs no reads.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

#: The viewport rectangle is never drawn smaller than this (pixels), so it stays findable when zoomed far in.
MIN_MARK_PX = 6.0


class OverviewWidget(QWidget):
    """Shows ``image`` (the whole slide) and the level-0 ``viewport``; emits ``jumpRequested(level-0 point)`` when
    the user clicks or drags, meaning "centre the view there"."""

    jumpRequested = Signal(QPointF)

    def __init__(self, parent: QWidget | None = None, max_side: int = 230) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self._scaled: QImage | None = None
        self._slide_size = (1, 1)
        self._viewport = QRectF()
        self._max_side = max_side
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setToolTip("Overview: click or drag to move the view")
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)

    def set_image(self, image: QImage | None, slide_size: tuple[int, int] = (1, 1)) -> None:
        self._image = image
        self._scaled = None
        self._slide_size = (max(1, int(slide_size[0])), max(1, int(slide_size[1])))
        self.setFixedSize(self.sizeHint())
        self.update()

    def _scaled_image(self) -> QImage | None:
        """The thumbnail shrunk once to the widget (area-averaged), so a repaint is a plain copy."""
        r = self.image_rect().toAlignedRect()
        if self._image is None or r.isEmpty():
            return None
        if self._scaled is None or self._scaled.size() != r.size():
            self._scaled = self._image.scaled(r.size(), Qt.AspectRatioMode.IgnoreAspectRatio,
                                              Qt.TransformationMode.SmoothTransformation)
        return self._scaled

    def set_viewport(self, rect: QRectF) -> None:
        self._viewport = QRectF(rect)
        self.update()

    def sizeHint(self) -> QSize:
        w, h = self._slide_size
        side = self._max_side
        if w >= h:
            return QSize(side + 6, max(40, int(side * h / w)) + 6)
        return QSize(max(40, int(side * w / h)) + 6, side + 6)

    # -------------------------------------------------------------------------------------------- geometry
    def image_rect(self) -> QRectF:
        """Where the slide is drawn inside the widget (aspect ratio kept, 3-pixel frame)."""
        w, h = self._slide_size
        avail = QRectF(self.rect()).adjusted(3, 3, -3, -3)
        scale = min(avail.width() / w, avail.height() / h)
        dw, dh = w * scale, h * scale
        return QRectF(avail.left() + (avail.width() - dw) / 2, avail.top() + (avail.height() - dh) / 2, dw, dh)

    def to_slide(self, pos: QPointF) -> QPointF:
        r = self.image_rect()
        w, h = self._slide_size
        x = min(max((pos.x() - r.left()) / r.width(), 0.0), 1.0) * w
        y = min(max((pos.y() - r.top()) / r.height(), 0.0), 1.0) * h
        return QPointF(x, y)

    def to_widget(self, rect: QRectF) -> QRectF:
        r = self.image_rect()
        w, h = self._slide_size
        sx, sy = r.width() / w, r.height() / h
        return QRectF(r.left() + rect.left() * sx, r.top() + rect.top() * sy, rect.width() * sx, rect.height() * sy)

    # ---------------------------------------------------------------------------------------------- events
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(24, 26, 30))
        r = self.image_rect()
        scaled = self._scaled_image()
        if scaled is not None:
            p.drawImage(r.toAlignedRect().topLeft(), scaled)
        if not self._viewport.isEmpty():
            mark = self.to_widget(self._viewport).intersected(r.adjusted(-1, -1, 1, 1))
            if mark.width() < MIN_MARK_PX or mark.height() < MIN_MARK_PX:
                c = mark.center()
                mark = QRectF(c.x() - MIN_MARK_PX / 2, c.y() - MIN_MARK_PX / 2, MIN_MARK_PX, MIN_MARK_PX)
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            p.setPen(QPen(QColor(0, 0, 0, 140), 3.0))
            p.drawRect(mark)
            p.setPen(QPen(QColor(255, 214, 10), 1.6))
            p.drawRect(mark)
        p.setPen(QPen(QColor(90, 94, 102), 1.0))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5))

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self.jumpRequested.emit(self.to_slide(event.position()))
            event.accept()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.jumpRequested.emit(self.to_slide(event.position()))
            event.accept()
