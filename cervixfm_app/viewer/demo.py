"""The demo: a synthetic Pap smear generated once into the user cache, and the demo bundle when one is installed.

Started without a slide, the viewer should show something real at once, not an empty window. A 30,000 x 30,000
synthetic smear (a real pyramidal TIFF, about a minute to draw) is generated on first start in a background thread
behind a progress dialog that can cancel it; generation writes atomically, so a cancelled or killed run leaves no
half file and the next start simply tries again. Later starts reuse it. Its ground-truth GeoJSON (every cell with
its class) can be shown as a layer.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from core.paths import cache_dir, data_dir

from .workers import Mailbox, lower_thread_priority

DEMO_SIZE = 30000
DEMO_SEED = 1
DEMO_ABNORMAL_FRACTION = 0.08
DEMO_NAME = "demo_smear.tiff"


def demo_folder() -> Path:
    return cache_dir() / "demo"


def demo_slide_path() -> Path:
    return demo_folder() / DEMO_NAME


def demo_ground_truth_path() -> Path:
    return demo_slide_path().with_suffix(".geojson")


def demo_slide_ready() -> bool:
    """Both files exist (the GeoJSON is written after the slide, so a slide alone means an interrupted run)."""
    return demo_slide_path().is_file() and demo_ground_truth_path().is_file()


def demo_bundle_path() -> Path | None:
    """``<data dir>/bundles/demo`` when a bundle is installed there, else None."""
    folder = data_dir() / "bundles" / "demo"
    return folder if (folder / "bundle.json").is_file() else None


class _Cancelled(Exception):
    pass


class DemoSlideJob(QObject):
    """Generates the demo slide in a thread. ``progressed(done, total)``, then ``finished(path)``,
    ``failed(message)`` or ``cancelled()``, all in the GUI thread."""

    progressed = Signal(int, int)
    finished = Signal(str)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, path: Path | None = None, size: int | None = None, seed: int | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = Path(path) if path else demo_slide_path()
        self.size = int(size or DEMO_SIZE)
        self.seed = DEMO_SEED if seed is None else int(seed)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._deliver)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="demo-slide", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float = 10.0) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _progress(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise _Cancelled()
        self._mail.post(("progress", done, total))

    def _run(self) -> None:
        from core.synthetic import generate_slide

        lower_thread_priority()
        try:
            generate_slide(self.path, self.size, self.size, seed=self.seed,
                           abnormal_fraction=DEMO_ABNORMAL_FRACTION, progress=self._progress)
        except _Cancelled:
            self._mail.post(("cancelled",))
        except Exception as exc:  # noqa: BLE001 - shown to the user; the app stays up
            self._mail.post(("failed", f"The demo slide could not be generated: {exc}"))
        else:
            self._mail.post(("finished", str(self.path)))

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


def load_ground_truth(path: str | Path):
    """The cells of a synthetic slide's ground-truth GeoJSON as an ``ObjectSet`` (outlines in class colours)."""
    from core.annotations import read_geojson
    from core.overlays import ObjectSet

    report = read_geojson(path, source="ground-truth")
    return ObjectSet.from_annotations(report.annotations, name="Ground truth cells")
