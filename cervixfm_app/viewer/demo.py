"""The demo: a synthetic Pap smear generated once into the user cache, and the demo bundle when one is installed.

Started without a slide, the viewer should show something real at once, not an empty window. A 30,000 x 30,000
synthetic smear (a real pyramidal TIFF, about a minute to draw) is generated on first start in a background thread
behind a progress dialog that can cancel it; generation writes atomically, so a cancelled or killed run leaves no
half file and the next start simply tries again. Later starts reuse it. Its ground-truth GeoJSON (every cell with
its class) can be shown as a layer.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject

from core.paths import cache_dir, data_dir

from .thread_job import JobCancelled, ThreadJob

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


class DemoSlideJob(ThreadJob):
    """Generates the demo slide in a thread: ``progressed(done, total)``, then ``finished(path)``,
    ``failed(message)`` or ``cancelled()``, all in the GUI thread."""

    thread_name = "demo-slide"
    failure_text = "The demo slide could not be generated"

    def __init__(self, path: Path | None = None, size: int | None = None, seed: int | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = Path(path) if path else demo_slide_path()
        self.size = int(size or DEMO_SIZE)
        self.seed = DEMO_SEED if seed is None else int(seed)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().start()

    def work(self, progress, cancelled) -> str:
        from core.synthetic import generate_slide

        def report(done: int, total: int) -> None:
            if cancelled():
                raise JobCancelled()
            progress(done, total)

        generate_slide(self.path, self.size, self.size, seed=self.seed, abnormal_fraction=DEMO_ABNORMAL_FRACTION,
                       progress=report)
        return str(self.path)


def load_ground_truth(path: str | Path):
    """The cells of a synthetic slide's ground-truth GeoJSON as an ``ObjectSet`` (outlines in class colours)."""
    from core.annotations import read_geojson
    from core.overlays import ObjectSet

    report = read_geojson(path, source="ground-truth")
    return ObjectSet.from_annotations(report.annotations, name="Ground truth cells")
