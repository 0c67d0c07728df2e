"""The scale bar: a length in round micrometres (1, 2 or 5 times a power of ten) drawn in the view's corner.

A bar of arbitrary length ("37.4 µm") forces the reader to do arithmetic; a round length whose bar changes size
with the zoom does not. Cytologists judge nuclear size against it, so it follows the slide's MPP, and says when
that MPP is only assumed.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen

_STEPS = (1.0, 2.0, 5.0)


def nice_length(um_per_px: float, max_px: float = 140.0) -> tuple[float, float]:
    """The longest round length (µm) whose bar fits in ``max_px`` screen pixels, and that bar's length in pixels."""
    if not (um_per_px > 0 and math.isfinite(um_per_px)):
        raise ValueError(f"um_per_px must be a positive number, got {um_per_px}")
    limit = max_px * um_per_px
    exponent = math.floor(math.log10(limit))
    best = 10.0 ** (exponent - 1)
    for e in (exponent - 1, exponent):
        for step in _STEPS:
            value = step * 10.0**e
            if value <= limit * (1 + 1e-9):
                best = max(best, value)
    return best, best / um_per_px


def format_length(um: float) -> str:
    if um >= 1000:
        mm = um / 1000
        return f"{mm:g} mm"
    if um >= 1:
        return f"{um:g} µm"
    return f"{um * 1000:g} nm"


def paint_scale_bar(painter: QPainter, area: QRectF, um_per_px: float, assumed: bool = False,
                    margin: float = 14.0, max_px: float = 140.0) -> QRectF:
    """Draw the bar in the bottom-left corner of ``area`` (widget pixels); returns the box it occupies."""
    length_um, length_px = nice_length(um_per_px, max_px)
    label = format_length(length_um) + ("  (MPP assumed)" if assumed else "")
    font = QFont(painter.font())
    font.setPointSizeF(9.0)
    font.setBold(True)
    metrics = QFontMetricsF(font)
    text_w = metrics.horizontalAdvance(label)
    pad = 7.0
    box_w = max(length_px, text_w) + 2 * pad
    box_h = metrics.height() + 16.0
    box = QRectF(area.left() + margin, area.bottom() - margin - box_h, box_w, box_h)
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(20, 22, 26, 170))
    painter.drawRoundedRect(box, 4, 4)
    painter.setFont(font)
    painter.setPen(QColor(255, 190, 60) if assumed else QColor(240, 240, 240))
    painter.drawText(QRectF(box.left() + pad, box.top() + 3, box_w - 2 * pad, metrics.height()),
                     Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, label)
    y = box.bottom() - 6.0
    x0 = box.left() + pad
    pen = QPen(QColor(245, 245, 245), 3.0)
    pen.setCapStyle(Qt.PenCapStyle.FlatCap)
    painter.setPen(pen)
    painter.drawLine(QPointF(x0, y), QPointF(x0 + length_px, y))
    pen.setWidthF(1.5)
    painter.setPen(pen)
    painter.drawLine(QPointF(x0, y - 5), QPointF(x0, y + 1.5))
    painter.drawLine(QPointF(x0 + length_px, y - 5), QPointF(x0 + length_px, y + 1.5))
    painter.restore()
    return box
