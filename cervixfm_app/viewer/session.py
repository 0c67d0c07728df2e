"""What the viewer knows about the open slide, shared by every panel: its annotations and its latest analysis.

One ``SlideSession`` per open slide (``MainWindow.session``; None when no slide is open). It is the one place the
panels meet, so none of them has to know the others: the analysis panel sets ``result`` and ``cells`` as they
arrive, the suspicious-cell gallery and the similar-cell search read them, and everything a pathologist decides
(drawn regions, accepted or rejected cells, imported GeoJSON) goes into ``store``, which is autosaved to the slide's
sidecar a moment after each change. The data are ``core`` objects; this class only adds Qt signals and the
autosave timer.

Reopening the same slide (a corrected MPP) keeps the session; closing the slide or the window saves first.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from core.annotations import AnnotationStore, AutoSaver, Sidecar
from core.errors import CervixFMError

from .workers import Mailbox

log = logging.getLogger(__name__)

#: Seconds of quiet after an edit before the sidecar is written.
AUTOSAVE_DELAY_MS = 1500


class SlideSession(QObject):
    #: The store changed (any thread may change it; this arrives on the GUI thread with the ``StoreEvent``).
    annotationsChanged = Signal(object)
    #: A new or updated ``SlideResult`` (tile scores, slide scores); None when cleared.
    resultChanged = Signal(object)
    #: A new ``CellTable`` (or None); emitted when an analysis' cell stage delivers cells.
    cellsChanged = Signal(object)
    #: A message for the status bar (autosave problems, sidecar warnings).
    message = Signal(str)

    def __init__(self, slide_path: str | Path, slide, parent: QObject | None = None) -> None:
        """``slide``: the opened ``core.slides.Slide`` (for its bounds offset and MPP)."""
        super().__init__(parent)
        self.slide_path = Path(slide_path)
        self.slide = slide
        self.store = AnnotationStore()
        self.sidecar = Sidecar(self.slide_path, offset=slide)
        self.result = None  # core.pipeline.SlideResult of the latest analysis shown
        self.cells = None  # core.cells.CellTable of the latest cell stage shown
        self.load_warnings: list[str] = []
        self._load_sidecar()
        self.autosaver = AutoSaver(self.store, self.sidecar)
        self._events = Mailbox(self)
        self._events.arrived.connect(self._deliver_events)
        self._timer = QTimer(self, singleShot=True, interval=AUTOSAVE_DELAY_MS, timeout=self.save)
        self._unsubscribe = self.store.subscribe(self._events.post)

    def _load_sidecar(self) -> None:
        report = self.sidecar.load()
        self.load_warnings = list(report.warnings)
        if report.annotations:
            self.store.load(report.annotations)
        for warning in self.load_warnings:
            log.warning("%s: %s", self.sidecar.path, warning)

    # --------------------------------------------------------------------------------------------- results
    def set_result(self, result) -> None:
        self.result = result
        self.resultChanged.emit(result)

    def set_cells(self, cells) -> None:
        self.cells = cells
        self.cellsChanged.emit(cells)

    # ------------------------------------------------------------------------------------------ annotations
    def _deliver_events(self) -> None:
        for event in self._events.take():
            self.annotationsChanged.emit(event)
        if self.autosaver.dirty:
            self._timer.start()

    def save(self) -> bool:
        """Write the sidecar now if anything changed; a failure is reported, never raised (the work stays in memory
        and the next edit tries again)."""
        self._timer.stop()
        try:
            return self.autosaver.save_if_dirty()
        except CervixFMError as exc:
            self.message.emit(f"Annotations not saved: {exc}")
            return False
        except OSError as exc:
            self.message.emit(f"Annotations not saved ({self.sidecar.path}): {exc}")
            return False

    @property
    def unsaved(self) -> bool:
        return self.autosaver.dirty

    def close(self) -> None:
        """Save and stop listening (the window calls this before the slide goes)."""
        self.save()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
