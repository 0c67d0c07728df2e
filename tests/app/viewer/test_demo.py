"""The demo slide: generated once into the user cache behind a cancellable progress dialog, reused afterwards,
its ground truth offered as a layer; cancelling leaves no half file."""

from __future__ import annotations

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CERVIXFM_HOME", str(tmp_path / "home"))
    import cervixfm_app.viewer.demo as demo

    monkeypatch.setattr(demo, "DEMO_SIZE", 2048)
    monkeypatch.setattr(demo, "DEMO_SEED", 2)  # 35 cells in the corner a 2048-pixel slide covers
    return tmp_path / "home"


def test_demo_generated_once_then_reused(qtbot, home, settings, dialogs):
    from cervixfm_app.viewer import demo
    from cervixfm_app.viewer.main_window import MainWindow

    assert not demo.demo_slide_ready() and demo.demo_bundle_path() is None
    w = MainWindow(settings=settings)
    qtbot.addWidget(w)
    w.show()
    w.open_demo()
    assert w.demo_job is not None and w._progress is not None
    qtbot.waitUntil(lambda: w.slide_path is not None, timeout=60000)
    assert w.slide_path == demo.demo_slide_path() and demo.demo_slide_ready()
    assert w._progress is None
    def ground_truth_layers():
        return [layer for layer in w.view.layers() if layer.name.startswith("Ground truth")]

    qtbot.waitUntil(lambda: len(ground_truth_layers()) == 1, timeout=30000)
    layer = ground_truth_layers()[0]
    assert not layer.visible and len(layer.objects) > 10
    assert "Inflammatory" in layer.objects.class_names
    mtime = demo.demo_slide_path().stat().st_mtime_ns
    w.close()

    again = MainWindow(settings=settings)
    qtbot.addWidget(again)
    again.open_demo()
    assert again.demo_job is None and again.slide_path == demo.demo_slide_path()
    assert demo.demo_slide_path().stat().st_mtime_ns == mtime
    again.close()
    assert dialogs == []


def test_cancelled_generation_leaves_nothing(qtbot, home):
    from cervixfm_app.viewer.demo import DemoSlideJob

    job = DemoSlideJob(home / "demo" / "big.tiff", size=20000)
    done = []
    job.cancelled.connect(lambda: done.append("cancelled"))
    job.finished.connect(lambda p: done.append("finished"))
    with qtbot.waitSignal(job.progressed, timeout=30000):
        job.start()
    job.cancel()
    qtbot.waitUntil(lambda: bool(done), timeout=30000)
    assert done == ["cancelled"] and job.wait(5)
    assert [p.name for p in (home / "demo").iterdir()] == []
