"""Overlay layers: objects drawn at their place in their class colour as vectors (zoomed in) and as raster tiles
(zoomed out), live updates from a worker thread, hit-testing 100,000 objects, heat maps, the layers panel."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.overlays import ObjectSet, TileScores, colormap_lut
from viewer_support import grab_rgb

W, H = 480, 360
GREEN = (0, 255, 0)


@pytest.fixture
def view(qtbot, view_slide, source_factory):
    from cervixfm_app.viewer.slide_view import SlideView

    v = SlideView()
    v.resize(W, H)
    v.set_scale_bar_visible(False)
    qtbot.addWidget(v)
    v.show()
    qtbot.waitExposed(v)
    v.set_source(source_factory(view_slide.path))
    yield v
    v.clear_layers()


def settle(qtbot, view, timeout=20000):
    def done():
        return (view.is_complete() and view.source.is_idle()
                and all(getattr(layer, "is_complete", lambda: True)() for layer in view.layers()))

    qtbot.waitUntil(done, timeout=timeout)
    view._settle()


def green_mask(img: np.ndarray) -> np.ndarray:
    return (img[..., 1] > 180) & (img[..., 0] < 90) & (img[..., 2] < 90)


@pytest.mark.parametrize("mode, ds", [("vector", 1.0), ("raster", 2.0)])
def test_objects_drawn_in_place_in_class_colour(qtbot, view, mode, ds):
    from cervixfm_app.viewer.layers import VectorLayer

    objects = ObjectSet.from_boxes([[1000, 800, 120, 90]], [0], ["marker"], [GREEN])
    layer = VectorLayer(objects, vector_limit=1 if mode == "vector" else 0)
    view.add_layer(layer)
    view.show_region(900, 700, ds)
    settle(qtbot, view)
    assert layer.last_mode == mode
    img = grab_rgb(view)
    green = green_mask(img)
    ys, xs = np.nonzero(green)
    # the box spans level-0 x 1000..1120, y 800..890: on screen ((x - 900) / ds, (y - 700) / ds)
    assert xs.min() == pytest.approx(100 / ds, abs=2) and xs.max() == pytest.approx(220 / ds, abs=2)
    assert ys.min() == pytest.approx(100 / ds, abs=2) and ys.max() == pytest.approx(190 / ds, abs=2)
    inside = green[int(110 / ds) + 3:int(180 / ds) - 3, int(110 / ds) + 3:int(210 / ds) - 3]
    assert not inside.any(), "outline only, no fill"
    layer.set_visible(False)
    view._settle()
    assert not green_mask(grab_rgb(view)).any()


def test_live_appends_from_a_worker_thread_appear(qtbot, view):
    from cervixfm_app.viewer.layers import VectorLayer

    objects = ObjectSet(["marker"], [GREEN])
    for vector_limit in (3000, 0):  # both drawing paths follow the model
        layer = VectorLayer(objects, vector_limit=vector_limit)
        view.add_layer(layer)
        view.show_region(0, 0, 2.0)
        settle(qtbot, view)
        x = 200 + 300 * (vector_limit == 0)
        assert not green_mask(grab_rgb(view))[90:162, x // 2 - 10:x // 2 + 62].any()
        t = threading.Thread(target=objects.add_boxes, args=([[x, 200, 100, 100]], [0]))
        t.start()
        t.join()
        qtbot.waitUntil(lambda: green_mask(grab_rgb(view))[100:152, x // 2:x // 2 + 52].any(), timeout=10000)
        view.remove_layer(layer)
        layer.close()


def test_100k_objects_switch_modes_and_hit_test_correctly(qtbot, view):
    from cervixfm_app.viewer.layers import VectorLayer

    rng = np.random.default_rng(4)
    n = 100_000
    w, h = view.source.size
    xy = rng.uniform(0, (w, h), (n, 2))
    wh = rng.uniform(4, 30, (n, 2))
    boxes = np.column_stack([xy, wh])
    objects = ObjectSet.from_boxes(boxes, rng.integers(0, 6, n), list("abcdef"))
    layer = VectorLayer(objects)
    view.add_layer(layer)
    view.zoom_to_fit()
    settle(qtbot, view)
    assert layer.last_mode == "raster"
    view.set_view(1500, 1100, 0.25)
    settle(qtbot, view)
    assert layer.last_mode == "vector"
    # hit tests through the view agree with brute force (smallest box containing the point)
    b = np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]])
    for x, y in rng.uniform(0, (w, h), (100, 2)):
        inside = np.nonzero((b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3]))[0]
        got_layer, got = view.layer_at(QPointF_(x, y), tolerance_px=0)
        if len(inside):
            assert got_layer is layer
            assert got == inside[np.argmin(boxes[inside, 2] * boxes[inside, 3])]
        else:
            assert got is None


def QPointF_(x, y):  # noqa: N802
    from PySide6.QtCore import QPointF

    return QPointF(float(x), float(y))


def test_heatmap_colours_tiles_as_values_arrive(qtbot, view):
    from cervixfm_app.viewer.layers import HeatmapLayer

    w, h = view.source.size
    xs, ys = np.meshgrid(np.arange(0, w, 448), np.arange(0, h, 448))
    boxes = np.column_stack([xs.ravel(), ys.ravel(), np.full(xs.size, 448), np.full(xs.size, 448)])
    scores = TileScores(boxes)
    layer = HeatmapLayer(scores, cmap="viridis", vmin=0.0, vmax=1.0, opacity=1.0)
    view.add_layer(layer)
    view.show_region(0, 0, 2.0)
    settle(qtbot, view)
    before = grab_rgb(view)
    lut = colormap_lut("viridis")
    t = threading.Thread(target=scores.set_values, args=([0, 1], [1.0, 0.0]))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: tuple(grab_rgb(view)[100, 100]) == tuple(lut[-1]), timeout=5000)
    img = grab_rgb(view)
    assert tuple(img[100, 112 + 224]) == tuple(lut[0])  # tile 1 (x 448..896) at value 0
    # tile 2 has no value: the slide shows through
    np.testing.assert_array_equal(img[100:150, 460:470], before[100:150, 460:470])
    assert layer.hit_test(500, 100) == 1 and layer.hit_test(-5, 0) is None


def test_layers_panel_toggles_visibility_opacity_and_classes(qtbot, view):
    from cervixfm_app.viewer.layers import HeatmapLayer, LayersPanel, VectorLayer

    panel = LayersPanel()
    qtbot.addWidget(panel)
    panel.set_view(view)
    assert len(panel.rows) == 0
    objects = ObjectSet.from_boxes([[10, 10, 50, 50]], [1], ["NILM", "HSIL"], [(0, 0, 255), GREEN])
    vec = VectorLayer(objects, "Detections")
    heat = HeatmapLayer(TileScores([[0, 0, 448, 448]]), "Scores")
    view.add_layer(vec)
    view.add_layer(heat)
    assert [row.layer for row in panel.rows] == [heat, vec]  # topmost first
    row = panel.rows[1]
    row.check.setChecked(False)
    assert not vec.visible
    row.check.setChecked(True)
    row.slider.setValue(40)
    assert vec.opacity == pytest.approx(0.4)
    assert [c.text() for c in row.class_checks] == ["NILM", "HSIL"]
    row.class_checks[1].setChecked(False)
    assert vec.hidden_classes == frozenset({1})
    vec.set_visible(False)  # the model side drives the panel too
    assert not row.check.isChecked()
    view.remove_layer(heat)
    assert [r.layer for r in panel.rows] == [vec]


def test_hiding_a_class_redraws_raster_tiles(qtbot, view):
    from cervixfm_app.viewer.layers import VectorLayer

    objects = ObjectSet.from_boxes([[200, 200, 100, 100], [600, 200, 100, 100]], [0, 1], ["keep", "hide"],
                                   [(0, 0, 255), GREEN])
    layer = VectorLayer(objects, vector_limit=0)
    view.add_layer(layer)
    view.show_region(0, 0, 2.0)
    settle(qtbot, view)
    assert green_mask(grab_rgb(view)).any()
    layer.set_hidden_classes([1])
    qtbot.waitUntil(lambda: not green_mask(grab_rgb(view)).any(), timeout=10000)
    blue = grab_rgb(view)
    assert ((blue[..., 2] > 200) & (blue[..., 0] < 60)).any(), "the other class is still drawn"
