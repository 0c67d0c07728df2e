"""The slide view streams the right pixels to the right place, never shows a blank slide while tiles load, and
navigates as a pathologist expects (wheel around the cursor, drag, keys, fit, magnification presets)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from viewer_support import grab_rgb, send_mouse, send_wheel

W, H = 480, 360


@pytest.fixture
def view(qtbot):
    from cervixfm_app.viewer.slide_view import SlideView

    v = SlideView()
    v.resize(W, H)
    v.set_scale_bar_visible(False)
    qtbot.addWidget(v)
    v.show()
    qtbot.waitExposed(v)
    return v


def settle(qtbot, view, timeout=15000):
    qtbot.waitUntil(lambda: view.is_complete() and view.source.is_idle(), timeout=timeout)
    view._settle()  # skip the 180 ms wait for the smooth redraw


@pytest.mark.parametrize("ds, level", [(1.0, 0), (2.0, 1), (4.0, 2)])
def test_tiles_render_exactly_where_read_region_says(qtbot, view, view_slide, source_factory, ds, level):
    source = source_factory(view_slide.path)
    view.set_source(source)
    x, y = 640, 512  # a multiple of 4, so level pixels line up with screen pixels
    view.show_region(x, y, ds)
    settle(qtbot, view)
    shown = grab_rgb(view)
    expected = source.slide.read_region((x, y), level, (W, H))
    np.testing.assert_array_equal(shown, expected)
    assert source.reads > 0


def test_fractional_zoom_matches_resampled_region(qtbot, view, view_slide, source_factory):
    source = source_factory(view_slide.path)
    view.set_source(source)
    view.show_region(300, 200, 1.5)
    settle(qtbot, view)
    shown = grab_rgb(view).astype(float)
    expected = source.slide.read_scaled(300, 200, W * 1.5, H * 1.5, W, H).astype(float)
    assert np.abs(shown - expected).mean() < 4.0
    # Qt's and Pillow's filters differ pixel by pixel; over 4 x 4 blocks the pictures agree
    pool = lambda a: a.reshape(H // 4, 4, W // 4, 4, 3).mean(axis=(1, 3))  # noqa: E731
    assert np.corrcoef(pool(shown).ravel(), pool(expected).ravel())[0, 1] > 0.98


def test_coarser_level_stands_in_until_tiles_arrive(qtbot, view, view_slide, source_factory):
    from cervixfm_app.viewer.slide_view import BACKGROUND

    source = source_factory(view_slide.path)
    gate = threading.Event()
    real = source.slide.read_scaled

    def slow_read(*args):
        gate.wait(20)
        return real(*args)

    source.slide.read_scaled = slow_read  # the readers now hang until the gate opens
    view.set_source(source)
    view.show_region(900, 700, 1.0)
    first = grab_rgb(view)
    assert view.missing_tiles > 0
    bg = np.array([BACKGROUND.red(), BACKGROUND.green(), BACKGROUND.blue()])
    assert not np.all(first == bg, axis=-1).any(), "blank (background) pixels inside the slide"
    truth = source.slide.read_region((900, 700), 0, (W, H)).astype(float)
    # the enlarged base image is blurred but shows the same scene
    assert np.corrcoef(first.astype(float).ravel(), truth.ravel())[0, 1] > 0.6
    gate.set()
    settle(qtbot, view)
    np.testing.assert_array_equal(grab_rgb(view), truth.astype(np.uint8))


def test_zoom_out_uses_cached_finer_tiles(qtbot, view, view_slide, source_factory):
    source = source_factory(view_slide.path)
    view.set_source(source)
    view.show_region(0, 0, 1.0)
    settle(qtbot, view)
    source.slide.read_scaled = lambda *a: (_ for _ in ()).throw(AssertionError("no reads expected"))
    view.show_region(0, 0, 2.0)  # the level-1 tiles are not cached, their level-0 children are
    shown = grab_rgb(view).astype(float)
    expected = source.slide.read_region((0, 0), 1, (W // 2, H // 2)).astype(float)
    assert np.abs(shown[: H // 2, : W // 2] - expected).mean() < 6.0


def test_fit_wheel_drag_keys_and_presets(qtbot, view, view_slide, source_factory):
    from cervixfm_app.viewer.slide_view import downsample_for_magnification

    source = source_factory(view_slide.path)
    view.set_source(source)
    w, h = source.size
    view.zoom_to_fit()
    r = view.visible_rect()
    assert r.left() <= 0 and r.top() <= 0 and r.right() >= w and r.bottom() >= h
    assert view.downsample == pytest.approx(max(w / W, h / H) * 1.04)

    # wheel: the slide point under the cursor stays under the cursor
    under = view.map_to_slide(QPointF(100, 80))
    send_wheel(view, 100, 80, 240)
    assert view.downsample == pytest.approx(view.fit_downsample() / 2)
    after = view.map_to_slide(QPointF(100, 80))
    assert (after.x(), after.y()) == pytest.approx((under.x(), under.y()), abs=1e-6)

    # drag: the content follows the mouse; a click without drag is a click
    view.set_view(1500, 1100, 2.0)
    clicks = []
    view.clicked.connect(clicks.append)
    send_mouse(view, "press", 200, 150)
    send_mouse(view, "move", 230, 150)
    send_mouse(view, "move", 260, 170)
    send_mouse(view, "release", 260, 170)
    assert (view.center.x(), view.center.y()) == pytest.approx((1500 - 60 * 2, 1100 - 20 * 2))
    assert clicks == []
    send_mouse(view, "press", 10, 20)
    send_mouse(view, "release", 10, 20)
    x0, y0 = view.origin()
    assert (clicks[0].x(), clicks[0].y()) == pytest.approx((x0 + 10 * 2, y0 + 20 * 2))

    # keys
    cx = view.center.x()
    qtbot.keyClick(view, Qt.Key.Key_Right)
    assert view.center.x() == pytest.approx(cx + W / 5 * 2)
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert view.downsample == pytest.approx(1.0)
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    assert view.downsample == pytest.approx(2.0)
    qtbot.keyClick(view, Qt.Key.Key_0)
    assert view.downsample == pytest.approx(view.fit_downsample())

    # presets: 40x is 0.25 µm per screen pixel
    mpp = source.mpp[0]
    for mag in (5, 10, 20, 40):
        view.set_magnification(mag)
        assert view.magnification() == pytest.approx(mag)
        assert view.downsample == pytest.approx(downsample_for_magnification(mag, mpp))
    assert downsample_for_magnification(40, 0.25) == 1.0


def test_view_changed_reports_rect_and_zoom(qtbot, view, view_slide, source_factory):
    source = source_factory(view_slide.path)
    view.set_source(source)
    seen = []
    view.viewChanged.connect(lambda rect, zoom: seen.append((rect, zoom)))
    view.set_view(1000, 800, 0.5)
    rect, zoom = seen[-1]
    assert zoom == 2.0
    assert (rect.left(), rect.top(), rect.width(), rect.height()) == pytest.approx(
        (1000 - W / 4, 800 - H / 4, W / 2, H / 2))


def test_overview_click_centres_the_view(qtbot, view, view_slide, source_factory):
    from cervixfm_app.viewer.overview import OverviewWidget

    source = source_factory(view_slide.path)
    view.set_source(source)
    overview = OverviewWidget()
    qtbot.addWidget(overview)
    overview.set_image(source.base, source.size)
    overview.jumpRequested.connect(lambda p: view.center_on(p.x(), p.y()))
    view.viewChanged.connect(lambda rect, zoom: overview.set_viewport(rect))
    overview.show()
    view.set_view(500, 500, 1.0)
    r = overview.image_rect()
    send_mouse(overview, "press", r.left() + r.width() * 0.75, r.top() + r.height() * 0.25)
    w, h = source.size
    assert (view.center.x(), view.center.y()) == pytest.approx((0.75 * w, 0.25 * h), rel=0.01)
    mark = overview.to_widget(view.visible_rect())
    assert mark.center().x() == pytest.approx(r.left() + r.width() * 0.75, abs=1)
    # the rectangle is drawn: yellow pixels on its edge
    img = grab_rgb(overview)
    edge = img[int(mark.top()), int(mark.left()):int(mark.right())]
    assert ((edge[:, 0] > 200) & (edge[:, 1] > 170) & (edge[:, 2] < 80)).any()


def test_scale_bar_lengths_are_round():
    from cervixfm_app.viewer.scale_bar import format_length, nice_length

    assert nice_length(0.25, 140) == (20.0, 80.0)
    assert nice_length(1.0, 140) == (100.0, 100.0)
    assert nice_length(25.0, 140) == (2000.0, 80.0)
    assert format_length(2000.0) == "2 mm" and format_length(50.0) == "50 µm" and format_length(0.5) == "500 nm"
    for upp in np.geomspace(0.01, 500, 50):
        um, px = nice_length(upp, 140)
        assert 140 / 2.5 <= px <= 140
        mantissa = um / 10 ** np.floor(np.log10(um))
        assert round(mantissa, 6) in (1.0, 2.0, 5.0)
