"""Analysis jobs run off the GUI thread, report live, cancel promptly and surface errors as messages."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QCoreApplication  # noqa: E402

from cervixfm_app.viewer.jobs import AnalysisJob  # noqa: E402
from core.pipeline.analysis_model import model_from_checkpoint  # noqa: E402
from core.pipeline.analyze import SlideAnalysis  # noqa: E402
from slide_fixtures import synthetic  # noqa: E402


@pytest.fixture(scope="module")
def app():
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


@pytest.fixture(scope="module")
def setup(golden_dir, tmp_path_factory):
    slide = synthetic(tmp_path_factory.mktemp("jobs"), "jobs.tiff", width=4096, height=4096, seed=9).path
    return slide, model_from_checkpoint(golden_dir / "cervixfm_tiny.pth", device="cpu")


def _pump_until(app, condition, timeout=60.0):
    import time

    end = time.time() + timeout
    while not condition() and time.time() < end:
        QCoreApplication.processEvents()
        time.sleep(0.005)
    QCoreApplication.processEvents()
    return condition()


def test_job_reports_batches_and_finishes(app, setup, tmp_path):
    slide, model = setup
    job = AnalysisJob(lambda: SlideAnalysis(slide, model, tmp_path, batch_size=4))
    batches, results = [], []
    job.batchFinished.connect(lambda idx, out: batches.append((idx, out)))
    job.finished.connect(results.append)
    job.start()
    assert _pump_until(app, lambda: bool(results))
    assert results[0].status == "complete"
    assert sum(len(i) for i, _ in batches) == len(results[0].tiles)
    assert all("features" in out for _, out in batches)


def test_cancel_stops_within_a_batch(app, setup, tmp_path):
    slide, model = setup
    job = AnalysisJob(lambda: SlideAnalysis(slide, model, tmp_path, batch_size=2))
    got = []
    job.batchFinished.connect(lambda idx, out: (got.append(len(idx)), job.cancel()))
    partial = []
    job.cancelled.connect(partial.append)
    job.start()
    assert _pump_until(app, lambda: bool(partial))
    assert job.wait(10) and partial[0].status == "cancelled" and len(partial[0].tiles) <= 4


def test_errors_become_messages(app, tmp_path, setup):
    _, model = setup
    bad = tmp_path / "broken.svs"
    bad.write_text("not a slide")
    job = AnalysisJob(lambda: SlideAnalysis(bad, model, tmp_path))
    messages = []
    job.failed.connect(messages.append)
    job.start()
    assert _pump_until(app, lambda: bool(messages))
    assert "broken.svs" in messages[0]
