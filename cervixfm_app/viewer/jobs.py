"""Bridge from Qt to ``core.pipeline``: an analysis runs on a worker thread and reports through queued signals.

The GUI thread never waits on the backbone: ``AnalysisJob.start()`` returns at once, every finished batch arrives as
``batchFinished`` (tile indices + head outputs, for live overlays), and ``cancel()`` makes the pipeline stop within
one batch. ``wait()`` is for shutdown only (closing the window cancels and joins running jobs).
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Callable

from PySide6.QtCore import QObject, Signal

from core.errors import CervixFMError

log = logging.getLogger(__name__)


class AnalysisJob(QObject):
    progress = Signal(int, int, float, object)  # done, total, tiles/s, ETA seconds (or None)
    batchFinished = Signal(object, object)  # tile indices (np.ndarray), outputs {name: array}
    finished = Signal(object)  # SlideResult
    cancelled = Signal(object)  # partial SlideResult
    failed = Signal(str)  # message for the user

    def __init__(self, make_analysis: Callable[[], object], region: tuple[float, float, float, float] | None = None,
                 parent: QObject | None = None):
        """``make_analysis`` builds the ``SlideAnalysis`` on the worker (opening a slide and finding its cell area
        take a moment); ``region`` (level-0 x0, y0, x1, y1) is analysed first, e.g. the current view."""
        super().__init__(parent)
        self._make = make_analysis
        self._region = region
        self._analysis = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._work, name="analysis-job", daemon=True)

    @property
    def analysis(self):
        return self._analysis

    def start(self) -> None:
        self._thread.start()

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def cancel(self) -> None:
        self._cancel.set()
        if self._analysis is not None:
            self._analysis.cancel()

    def prioritise_region(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Follow the viewport: tiles of the region the user looks at are analysed next."""
        if self._analysis is not None:
            self._analysis.prioritise_region(x0, y0, x1, y1)
        else:
            self._region = (x0, y0, x1, y1)

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _on_progress(self, p) -> None:
        self.progress.emit(p.done, p.total, p.rate, p.eta_s)
        self.batchFinished.emit(p.batch_indices, dict(p.batch_outputs))

    def _work(self) -> None:
        try:
            self._analysis = analysis = self._make()
            if self._region is not None:
                analysis.prioritise_region(*self._region)
            if self._cancel.is_set():
                analysis.cancel()
            result = analysis.run(self._on_progress)
        except CervixFMError as exc:
            self.failed.emit(str(exc))
            return
        except Exception as exc:  # a bug must reach the user as a message, not kill the app silently
            log.error("analysis failed:\n%s", traceback.format_exc())
            self.failed.emit(f"The analysis stopped with an internal error: {exc}")
            return
        (self.cancelled if result.status == "cancelled" else self.finished).emit(result)
