"""Build the demo model bundle from inside the viewer (``training.demo_bundle``), in a thread, cancellable.

Without the published weights a first-time user has nothing to analyse with; this lets them get a real, if small,
model in about ten minutes without a terminal. The training recipe lives in ``training`` and is imported lazily,
only when the user asks for it (DESIGN: the app reaches into ``training`` only for research recipes on request).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject

from .thread_job import JobCancelled, ThreadJob


def default_demo_bundle_folder() -> Path:
    from core.paths import data_dir

    return data_dir() / "bundles" / "demo"


class DemoBundleJob(ThreadJob):
    """``progressed(fraction, message)``, then ``finished(folder)``, ``failed(message)`` or ``cancelled()``, all
    on the GUI thread. ``quick`` builds the tiny test bundle (seconds)."""

    thread_name = "demo-bundle"
    failure_text = "The demo bundle could not be built"

    def __init__(self, out_dir: str | Path | None = None, *, quick: bool = False, force: bool = False,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.out_dir = Path(out_dir) if out_dir is not None else default_demo_bundle_folder()
        self.quick = quick
        self.force = force

    def work(self, progress, cancelled) -> str:
        from training.demo_bundle import DemoBundleCancelled, build_demo_bundle

        try:
            folder = build_demo_bundle(self.out_dir, quick=self.quick, force=self.force,
                                       progress=lambda f, msg: progress(float(f), str(msg)), cancel=cancelled)
        except DemoBundleCancelled as exc:
            raise JobCancelled() from exc
        return str(folder)
