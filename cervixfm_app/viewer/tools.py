"""Mouse modes of the slide view: the one interface drawing tools, the similar-cell picker and any later mode share.

The view owns navigation (wheel zoom, drag pan, keys); a tool sees the events first, in level-0 coordinates, and
says whether it used them. An event a tool leaves alone navigates as before, and the middle button pans whatever
tool is active, so a pathologist never has to leave a tool to move around. ``paint`` draws the tool's own feedback
(a rubber band, the polygon being drawn) above the overlay layers.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QPainter


class ViewTool:
    """Base class: every handler returns False (not used), so a subclass overrides only what it needs."""

    #: Shown while the tool is active.
    name = "Navigate"
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self) -> None:
        self.view = None

    def activate(self, view) -> None:
        self.view = view

    def deactivate(self) -> None:
        """Drop anything half-done; called when another tool (or none) takes over."""
        self.view = None

    def press(self, point: QPointF, event) -> bool:
        """Left button down. Returning True gives the tool the following moves and the release (no pan)."""
        return False

    def move(self, point: QPointF, event) -> bool:
        """The mouse moved: while the tool owns a press, or hovering (no button) for feedback such as a preview."""
        return False

    def release(self, point: QPointF, event) -> bool:
        return False

    def click(self, point: QPointF, event) -> bool:
        """A left click that did not drag (the tool declined the press). True stops the view's ``clicked``."""
        return False

    def double_click(self, point: QPointF, event) -> bool:
        return False

    def key(self, event) -> bool:
        return False

    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        """Draw feedback; the painter is in widget pixels, ``scale`` is screen pixels per level-0 pixel."""

    # helpers for subclasses
    def to_screen(self, point: QPointF) -> QPointF:
        return self.view.map_from_slide(point)

    def update(self) -> None:
        if self.view is not None:
            self.view.update()
