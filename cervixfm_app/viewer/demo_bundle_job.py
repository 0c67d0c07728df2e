"""Build the demo model bundle from inside the viewer (``training.demo_bundle``), in a thread, cancellable.

Without the published weights a first-time user has nothing to analyse with; this lets them get a real, if small,
model in about ten minutes without a terminal. The training recipe lives in ``training`` and is imported lazily,
only when the user asks for it (DESIGN: the app reaches into ``training`` only for research recipes on request).
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from core.errors import CervixFMError

from .workers import Mailbox, lower_thread_priority


def default_demo_bundle_folder() -> Path:
    from core.paths import data_dir

    return data_dir() / "bundles" / "demo"


class DemoBundleJob(QObject):
    """``progressed(fraction, message)``, then ``finished(folder)``, ``failed(message)`` or ``cancelled()``, all
    on the GUI thread. ``quick`` builds the tiny test bundle (seconds)."""

    progressed = Signal(float, str)
    finished = Signal(str)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, out_dir: str | Path | None = None, *, quick: bool = False, force: bool = False,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.out_dir = Path(out_dir) if out_dir is not None else default_demo_bundle_folder()
        self.quick = quick
        self.force = force
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._deliver)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-bundle", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        lower_thread_priority()
        try:
            from training.demo_bundle import DemoBundleCancelled, build_demo_bundle

            folder = build_demo_bundle(self.out_dir, quick=self.quick, force=self.force,
                                       progress=lambda f, msg: self._mail.post(("progress", float(f), str(msg))),
                                       cancel=self._cancel.is_set)
        except DemoBundleCancelled:
            self._mail.post(("cancelled",))
        except CervixFMError as exc:
            self._mail.post(("failed", str(exc)))
        except Exception as exc:  # noqa: BLE001 - shown to the user; the app stays up
            self._mail.post(("failed", f"The demo bundle could not be built: {type(exc).__name__}: {exc}"))
        else:
            self._mail.post(("finished", str(folder)))

    def _deliver(self) -> None:
        items = self._mail.take()
        progress = [m for m in items if m[0] == "progress"]
        if progress:
            self.progressed.emit(progress[-1][1], progress[-1][2])
        for m in items:
            if m[0] == "finished":
                self.finished.emit(m[1])
            elif m[0] == "failed":
                self.failed.emit(m[1])
            elif m[0] == "cancelled":
                self.cancelled.emit()
