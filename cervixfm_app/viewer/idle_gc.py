"""Full garbage collections while the view is still, never while it moves.

``workers.tune_interpreter_for_gui`` stops Python's automatic full collections: one walks every object the viewer
holds and stalls the GUI thread for 40-130 ms, which a pathologist panning a slide sees as a jerk. Young
collections still run as usual (they are cheap); the full ones run here, on the GUI thread, once the view has been
still for a moment, so reference cycles are still freed and memory does not grow while someone reads a slide.
"""

from __future__ import annotations

import gc
import time

from PySide6.QtCore import QObject, QTimer

#: The view must have been still this long before a full collection runs.
QUIET_S = 1.5
#: At most one full collection this often.
EVERY_S = 20.0


class IdleCollector(QObject):
    def __init__(self, view, parent: QObject | None = None, quiet_s: float = QUIET_S, every_s: float = EVERY_S):
        super().__init__(parent)
        self.quiet_s, self.every_s = quiet_s, every_s
        self.collections = 0
        self._last_motion = time.monotonic()
        self._last_collection = time.monotonic()
        view.viewChanged.connect(self._moved)
        self._timer = QTimer(self, interval=500, timeout=self._tick)
        self._timer.start()

    def _moved(self, *args) -> None:
        self._last_motion = time.monotonic()

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_motion >= self.quiet_s and now - self._last_collection >= self.every_s:
            self.collect()

    def collect(self) -> None:
        gc.collect()
        self.collections += 1
        self._last_collection = time.monotonic()
