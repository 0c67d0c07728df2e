"""Helpers for the viewer tests: pixels of a widget, synthetic input events."""

from __future__ import annotations

import numpy as np


def grab_rgb(widget) -> np.ndarray:
    """What the widget paints now, as (h, w, 3) uint8 RGB."""
    from cervixfm_app.viewer.tile_source import qimage_to_rgb

    return qimage_to_rgb(widget.grab().toImage())


def send_mouse(widget, kind: str, x: float, y: float, button=None, buttons=None) -> None:
    """Deliver a mouse press/move/release/double-click at widget position (x, y)."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease, "double": QEvent.Type.MouseButtonDblClick}
    button = Qt.MouseButton.LeftButton if button is None else button
    if buttons is None:
        buttons = Qt.MouseButton.NoButton if kind == "release" else button
    if kind == "move" and buttons == Qt.MouseButton.LeftButton and button == Qt.MouseButton.LeftButton:
        button = Qt.MouseButton.NoButton
    pos = QPointF(x, y)
    event = QMouseEvent(types[kind], pos, widget.mapToGlobal(pos), button, buttons, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def send_wheel(widget, x: float, y: float, angle: int) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    pos = QPointF(x, y)
    event = QWheelEvent(pos, widget.mapToGlobal(pos), QPoint(0, 0), QPoint(0, angle), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def open_private_copy(qtbot, settings, slide_path, folder, size=(900, 600)):
    """A shown main window with a private copy of the slide open, so its annotation sidecar is private too."""
    import shutil

    from cervixfm_app.viewer.main_window import MainWindow

    slide = folder / "case.tiff"
    shutil.copy(slide_path, slide)
    w = MainWindow(settings=settings)
    w.resize(*size)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    assert w.open_path(slide)
    return w
