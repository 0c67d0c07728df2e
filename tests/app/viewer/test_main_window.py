"""The main window: opening slides (menus, recent files, drag and drop), errors shown and survived, the status bar
(position in µm and px, magnification, MPP and its source, the set-MPP fix), closing while tiles stream."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl

from viewer_support import shown_window

W, H = 900, 600


@pytest.fixture
def window(qtbot, settings, dialogs):
    w = shown_window(qtbot, settings, (W, H))
    yield w
    w.close()


@pytest.fixture(scope="module")
def png_without_mpp(tmp_path_factory, view_slide):
    from PIL import Image

    from core.slides import open_slide

    with open_slide(view_slide.path) as slide:
        rgb = slide.read_region((0, 0), 1, (1500, 1100))
    path = tmp_path_factory.mktemp("png") / "camera.png"
    Image.fromarray(rgb).save(path)
    return path


def test_menus_status_bar_and_presets(qtbot, window, view_slide):
    assert [a.text() for a in window.menuBar().actions()] == [
        "&File", "&Edit", "&View", "&Analysis", "&Annotations", "&Tools", "&Help"]
    assert not window.fit_action.isEnabled()
    assert window.open_path(view_slide.path)
    assert window.windowTitle().startswith("view.tiff")
    assert window.fit_action.isEnabled() and window.overview.isVisible()
    assert window.mpp_button.text() == "0.25 µm/px (file)"
    window.magnification_actions[3].trigger()  # 40x
    assert window.view.magnification() == pytest.approx(40)
    assert window.zoom_label.text().startswith("40.0×")
    window.view.set_view(1000, 800, 1.0)
    window.view.cursorMoved.emit(window.view.map_to_slide(QPointF(10, 20)), True)
    x0, y0 = window.view.origin()
    px, py = int(x0 + 10), int(y0 + 20)
    assert f"({px:,}, {py:,} px)" in window.position_label.text()
    assert f"x {(x0 + 10) * 0.25:,.1f} µm" in window.position_label.text()
    window.fit_action.trigger()
    assert window.view.downsample == pytest.approx(window.view.fit_downsample())
    window.overview_action.setChecked(False)
    assert not window.overview.isVisible()
    window.scale_bar_action.setChecked(False)
    assert not window.view.scale_bar_visible()


def test_corrupt_slides_show_an_error_and_the_window_stays_up(qtbot, window, dialogs, view_slide, tmp_path):
    assert window.open_path(view_slide.path)
    truncated = tmp_path / "truncated.tiff"
    data = view_slide.path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "scan.svs"
    garbage.write_bytes(b"II*\x00" + bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8)))
    for bad in (truncated, garbage, tmp_path / "missing.ndpi"):
        assert not window.open_path(bad)
        kind, title, text = dialogs[-1]
        assert kind == "critical" and bad.name in text
    assert len(dialogs) == 3
    assert "truncat" in dialogs[0][2] or "incomplete" in dialogs[0][2]
    assert window.isVisible() and window.slide_path == view_slide.path
    assert window.view.source is not None and window.view.source.slide.path == view_slide.path


def test_damaged_regions_are_reported_and_hatched(qtbot, window, view_slide):
    from core.errors import SlideError

    assert window.open_path(view_slide.path)
    source = window.view.source

    def broken(*args):
        raise SlideError(f"{view_slide.path}: cannot read level 0 region: the tile data is damaged.")

    source.slide.read_scaled = broken
    messages = []
    window.view.readFailed.connect(messages.append)
    window.view.set_view(1200, 900, 1.0)
    qtbot.waitUntil(lambda: window.view.is_complete(), timeout=10000)
    assert messages and "damaged" in messages[0]
    assert "damaged" in window.statusBar().currentMessage()
    assert any(source.failed(k) for k in source.keys_in(0, 700, 600, 1700, 1200))


def test_fallback_mpp_is_flagged_and_can_be_set(qtbot, window, png_without_mpp):
    from cervixfm_app.viewer.layers import VectorLayer
    from core.overlays import ObjectSet

    assert window.open_path(png_without_mpp)
    assert "assumed" in window.mpp_button.text()
    assert "Set MPP" in window.statusBar().currentMessage()
    window.view.set_view(700, 500, 1.5)
    layer = VectorLayer(ObjectSet.from_boxes([[10, 10, 5, 5]], [0], ["x"]))
    window.view.add_layer(layer)
    layers = window.view.layers()
    assert layer in layers
    assert window.set_mpp(0.5)
    slide = window.view.source.slide
    assert slide.mpp == (0.5, 0.5) and slide.mpp_source == "user"
    assert window.mpp_button.text() == "0.5 µm/px (user)"
    assert (window.view.center.x(), window.view.center.y(), window.view.downsample) == (700, 500, 1.5)
    assert window.view.layers() == layers  # level-0 overlays stay valid when only the MPP changes
    assert window.view.magnification() == pytest.approx(10 / (0.5 * 1.5))


def test_recent_files_and_drag_and_drop(qtbot, window, settings, view_slide, png_without_mpp, tmp_path):
    from PySide6.QtGui import QDropEvent

    copy = tmp_path / "second.tiff"
    shutil.copy(view_slide.path, copy)
    assert window.open_path(view_slide.path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(copy))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.slide_path == copy
    assert window.recent_files()[:2] == [str(copy.resolve()), str(view_slide.path.resolve())]
    window._fill_recent_menu()
    names = [a.text() for a in window.recent_menu.actions() if a.text()]
    assert names[:2] == ["&1 second.tiff", "&2 view.tiff"]
    window.recent_menu.actions()[1].trigger()
    assert window.slide_path.name == "view.tiff"
    settings.sync()
    from PySide6.QtCore import QSettings

    again = QSettings(settings.fileName(), QSettings.Format.IniFormat)
    assert [str(p) for p in again.value("recentFiles")][0] == str(view_slide.path.resolve())


def test_closing_while_tiles_stream_stops_the_readers(qtbot, settings, dialogs, view_slide):
    from cervixfm_app.viewer.main_window import MainWindow

    w = MainWindow(settings=settings)
    w.resize(W, H)
    w.show()
    assert w.open_path(view_slide.path)
    source = w.view.source
    source.cache.clear()
    w.view.set_view(1500, 1100, 0.5)
    w.view._issue_requests()
    w.close()
    assert source._closed and all(not t.is_alive() for t in source.jobs._threads)
    assert dialogs == []
