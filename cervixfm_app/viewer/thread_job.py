"""One long piece of work on a thread, reported to the GUI thread: the shape of every "build this in the
background" job (the demo slide, the demo bundle) and the progress dialog that goes with it.

A subclass implements ``work(progress, cancelled)``: it calls ``progress(a, b)`` as it goes (the values pass through
to ``progressed``), checks ``cancelled()`` and raises ``JobCancelled`` to stop, and returns what ``finished``
carries. Failures the user can act on (``CervixFMError``) arrive as their message; anything else is prefixed with
``failure_text`` so the app stays up and says what went wrong.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QProgressDialog, QWidget

from core.errors import CervixFMError

from .workers import Mailbox, lower_thread_priority


class JobCancelled(Exception):
    """Raised inside ``work`` when ``cancelled()`` says so."""


class ThreadJob(QObject):
    progressed = Signal(object, object)  # whatever ``work`` passes to progress(a, b)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    #: Thread name, and the start of the message of an unexpected failure.
    thread_name = "background-job"
    failure_text = "The job failed"

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._deliver)

    def work(self, progress, cancelled):  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = 10.0) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        lower_thread_priority()
        try:
            value = self.work(lambda a, b: self._mail.post(("progress", a, b)), self._cancel.is_set)
        except JobCancelled:
            self._mail.post(("cancelled",))
        except CervixFMError as exc:
            self._mail.post(("failed", str(exc)))
        except Exception as exc:  # noqa: BLE001 - shown to the user; the app stays up
            self._mail.post(("failed", f"{self.failure_text}: {type(exc).__name__}: {exc}"))
        else:
            self._mail.post(("finished", value))

    def _deliver(self) -> None:
        items = self._mail.take()
        progress = [m for m in items if m[0] == "progress"]
        if progress:  # only the latest: a burst of updates costs one repaint
            self.progressed.emit(progress[-1][1], progress[-1][2])
        for m in items:
            if m[0] == "finished":
                self.finished.emit(m[1])
            elif m[0] == "failed":
                self.failed.emit(m[1])
            elif m[0] == "cancelled":
                self.cancelled.emit()


def job_progress_dialog(parent: QWidget, text: str, job: ThreadJob, *, maximum: int = 0,
                        modal: bool = True) -> QProgressDialog:
    """A progress dialog whose Cancel cancels ``job`` and that stays open until the caller closes it (a job
    reports its end through its own signals). ``maximum`` 0 = busy indicator until the first progress."""
    dialog = QProgressDialog(text, "Cancel", 0, maximum, parent)
    dialog.setWindowTitle(parent.window().windowTitle().split(" — ")[-1] or "CervixFM")
    dialog.setWindowModality(Qt.WindowModality.WindowModal if modal else Qt.WindowModality.NonModal)
    dialog.setMinimumDuration(0)
    dialog.setAutoClose(False)
    dialog.setAutoReset(False)
    dialog.canceled.connect(job.cancel)
    return dialog
