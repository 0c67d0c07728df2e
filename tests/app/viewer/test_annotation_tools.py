"""Annotation tools in the viewer: drawing rectangles, polygons (clicked and freehand) and points with the mouse
in level-0 pixels; select, move, delete, reclassify, undo and redo; the Annotations layer drawing in place (vector
and raster); the Annotations dock; QuPath GeoJSON export/import round trips with a bounds offset; malformed files;
snapshots with the overlays burnt in."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF, Qt
from shapely.geometry import Point, Polygon, box

from core.annotations import Annotation, read_geojson
from viewer_support import open_private_copy, grab_rgb, send_mouse

W, H = 900, 600
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
HSIL_RED = (215, 30, 30)


@pytest.fixture
def window(qtbot, settings, dialogs, small_slide, tmp_path):
    w = open_private_copy(qtbot, settings, small_slide.path, tmp_path, (W, H))
    w.view.set_scale_bar_visible(False)
    w.overview_action.setChecked(False)
    yield w
    w.close()


def settle(qtbot, view, timeout=20000):
    def done():
        return (view.is_complete() and view.source.is_idle()
                and all(getattr(layer, "is_complete", lambda: True)() for layer in view.layers()))

    view.update()
    qtbot.waitUntil(done, timeout=timeout)
    view._settle()


def drag(view, points):
    """Press at the first widget point, move through the rest with the button held, release at the last."""
    (x, y), *rest = points
    send_mouse(view, "press", x, y)
    for x, y in rest:
        send_mouse(view, "move", x, y, buttons=Qt.MouseButton.LeftButton)
    send_mouse(view, "release", x, y)


def click(view, x, y):
    send_mouse(view, "press", x, y)
    send_mouse(view, "release", x, y)


def colour_mask(img, rgb, tol=40):
    return (np.abs(img.astype(int) - rgb).max(axis=-1) <= tol)


def flush(qtbot):
    """Let queued store events reach the GUI thread (they travel through a Mailbox)."""
    qtbot.wait(30)


# ------------------------------------------------------------------------------------------------- drawing
def test_rectangle_polygon_point_and_freehand_are_drawn_in_level0_pixels(qtbot, window):
    tools, view, store = window.annotation_tools, window.view, window.session.store
    view.show_region(1000, 600, 0.5)  # widget (x, y) -> level-0 (1000 + x / 2, 600 + y / 2)
    tools.set_current_class("HSIL")

    qtbot.keyClick(view, Qt.Key.Key_R)  # the window-wide shortcut
    assert tools.tool_actions["rectangle"].isChecked() and view.tool is tools.tools["rectangle"]
    send_mouse(view, "press", 100, 80)
    send_mouse(view, "move", 300, 200, buttons=Qt.MouseButton.LeftButton)
    img = grab_rgb(view)  # the rubber band is drawn in the class colour while dragging
    assert colour_mask(img[78:83, 120:280], HSIL_RED).sum() > 50
    send_mouse(view, "release", 300, 200)
    flush(qtbot)
    (rect,) = store.snapshot()
    assert rect.geometry.equals(box(1050, 640, 1150, 700)) and rect.class_name == "HSIL"
    assert rect.object_type == "annotation" and rect.source == "user"
    assert tools.undo_action.text() == "&Undo Add rectangle" and tools.undo_action.isEnabled()
    assert "µm²" in window.statusBar().currentMessage()

    tools.use_tool("polygon")
    for x, y in [(100, 300), (300, 300), (300, 500)]:
        click(view, x, y)
    send_mouse(view, "move", 120, 480)  # hover shows the rubber segment; no vertex yet
    click(view, 100, 500)
    send_mouse(view, "double", 100, 500)  # double-click closes (Qt: press, release, double-click, release)
    send_mouse(view, "release", 100, 500)
    flush(qtbot)
    poly = store.snapshot()[-1]
    assert poly.geometry.equals(Polygon([(1050, 750), (1150, 750), (1150, 850), (1050, 850)]))
    assert view.downsample == 0.5  # the double-click did not zoom

    # Enter closes, Backspace drops the last vertex, Esc cancels
    for x, y in [(400, 100), (500, 100), (500, 200), (450, 260)]:
        click(view, x, y)
    qtbot.keyClick(view, Qt.Key.Key_Backspace)
    qtbot.keyClick(view, Qt.Key.Key_Return)
    flush(qtbot)
    assert store.snapshot()[-1].geometry.equals(Polygon([(1200, 650), (1250, 650), (1250, 700)]))
    n = len(store)
    click(view, 600, 100)
    click(view, 700, 100)
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    click(view, 700, 300)
    flush(qtbot)
    assert len(store) == n and tools.tools["polygon"].vertices == [QPointF(1350, 750)]
    qtbot.keyClick(view, Qt.Key.Key_Escape)

    # a drag with the button held draws freehand: a circle of radius 100 screen px = 50 level-0 px
    angles = np.linspace(0, 2 * np.pi, 90)
    drag(view, [(650 + 100 * np.cos(t), 300 + 100 * np.sin(t)) for t in angles])
    flush(qtbot)
    free = store.snapshot()[-1].geometry
    assert free.geom_type == "Polygon" and free.is_valid
    assert free.area == pytest.approx(np.pi * 50**2, rel=0.03)
    assert free.centroid.distance(Point(1325, 750)) < 1.0

    qtbot.keyClick(view, Qt.Key.Key_Period)
    assert view.tool is tools.tools["point"]
    click(view, 40, 60)
    flush(qtbot)
    point = store.snapshot()[-1]
    assert point.geometry.equals(Point(1020, 630)) and point.class_name == "HSIL"
    qtbot.keyClick(view, Qt.Key.Key_M)
    assert view.tool is None and tools.tool_actions["navigate"].isChecked()

    # another panel's mouse mode unchecks the drawing tools; choosing one of them takes over again
    from cervixfm_app.viewer.tools import ViewTool

    view.set_tool(ViewTool())
    view.repaint()
    assert tools.tool_group.checkedAction() is None
    tools.tool_actions["polygon"].trigger()
    assert view.tool is tools.tools["polygon"] and tools.tool_actions["polygon"].isChecked()


# ---------------------------------------------------------------------------------------------- editing
def test_select_move_reclassify_delete_undo_redo(qtbot, window):
    tools, view, store = window.annotation_tools, window.view, window.session.store
    view.show_region(1000, 600, 0.5)
    tools.set_current_class("LSIL")
    tools.use_tool("rectangle")
    drag(view, [(100, 100), (200, 160)])  # level-0 box(1050, 650, 1100, 680)
    flush(qtbot)
    (a,) = store.snapshot()

    qtbot.keyClick(view, Qt.Key.Key_V)
    assert view.tool is tools.tools["select"]
    click(view, 150, 130)  # inside
    assert tools.selection == (a.id,) and window.annotation_tools.layer.selection == (a.id,)
    click(view, 600, 500)  # bare slide clears
    assert tools.selection == ()
    click(view, 100, 120)  # on the outline
    assert tools.selection == (a.id,)

    drag(view, [(150, 130), (170, 140), (190, 150)])  # +40, +20 screen px = +20, +10 level-0 px
    flush(qtbot)
    moved = store.get(a.id)
    assert moved.geometry.equals(box(1070, 660, 1120, 690))
    assert tools.undo_action.text() == "&Undo Move rectangle"

    tools.class_combo.textActivated.emit("ASC-H")  # the class combo also sets the selection's class
    flush(qtbot)
    assert store.get(a.id).class_name == "ASC-H" and tools.current_class.name == "ASC-H"

    tools.undo()
    flush(qtbot)
    assert store.get(a.id).class_name == "LSIL"
    tools.undo()
    flush(qtbot)
    assert store.get(a.id).geometry.equals(box(1050, 650, 1100, 680))
    assert tools.redo_action.text() == "&Redo Move rectangle"
    qtbot.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    flush(qtbot)
    assert store.get(a.id).geometry.equals(box(1070, 660, 1120, 690))

    qtbot.keyClick(view, Qt.Key.Key_Delete)
    flush(qtbot)
    assert len(store) == 0 and tools.selection == ()
    qtbot.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    flush(qtbot)
    assert len(store) == 1 and store.get(a.id).geometry.equals(box(1070, 660, 1120, 690))

    # locked objects are not moved or deleted; the reason is shown
    tools.set_selection([a.id])
    tools.set_locked(True)
    flush(qtbot)
    drag(view, [(150, 140), (250, 240)])
    tools.delete_selection()
    flush(qtbot)
    assert store.get(a.id).geometry.equals(box(1070, 660, 1120, 690)) and len(store) == 1
    assert "locked" in window.statusBar().currentMessage()

    # a model's cell reclassified through the context menu's class list keeps what it was (a review)
    cell = Annotation(box(1300, 700, 1330, 730), "cell", "LSIL", source="model:test", score=0.8)
    store.add(cell, undoable=False)
    flush(qtbot)
    tools.set_selection([cell.id])
    menu = tools.selection_menu()
    classes = menu.actions()[0].menu()
    next(act for act in classes.actions() if act.text() == "HSIL").trigger()
    flush(qtbot)
    after = store.get(cell.id)
    assert after.class_name == "HSIL" and after.review.status == "reclassified" and after.review.previous == "LSIL"


def test_autosave_state_and_annotations_dock(qtbot, window):
    tools, view, store = window.annotation_tools, window.view, window.session.store
    assert tools.save_label.text() == "✓ Annotations saved"
    view.show_region(0, 0, 1.0)
    tools.set_current_class("HSIL")
    tools.add_drawn(box(1200, 800, 1300, 900), "rectangle")
    tools.set_current_class("LSIL")
    tools.add_drawn(Polygon([(100, 100), (160, 100), (130, 150)]), "polygon")
    tools.add_drawn(Point(50, 60), "point")
    flush(qtbot)
    assert "saving" in tools.save_label.text()
    qtbot.waitUntil(lambda: tools.save_label.text() == "✓ Annotations saved", timeout=5000)
    assert window.session.sidecar.path.exists()

    panel = tools.list_panel
    model = panel.model
    assert model.rowCount() == 3
    cells = [[model.index(r, c).data() for c in range(4)] for r in range(3)]
    assert cells[0][:2] == ["HSIL", "Rectangle"] and cells[0][2] == "625 µm²" and cells[0][3] == "user"
    assert cells[1][:2] == ["LSIL", "Polygon"] and cells[2][:2] == ["LSIL", "Point"]
    assert "HSIL" in panel.counts_label.text() and "<b>2</b>" in panel.counts_label.text()

    rect_id = store.snapshot()[0].id
    panel.table.clicked.emit(model.index(0, 0))  # click a row: select and go there
    assert tools.selection == (rect_id,)
    centre = view.visible_rect().center()
    assert (centre.x(), centre.y()) == pytest.approx((1250, 850), abs=1)

    tools.set_selection([store.snapshot()[1].id])  # the table follows the tools' selection
    assert [i.row() for i in panel.table.selectionModel().selectedRows()] == [1]
    panel.filter_combo.setCurrentIndex(2)  # cells and detections only
    assert model.rowCount() == 0
    panel.filter_combo.setCurrentIndex(0)
    tools.delete_selection()
    flush(qtbot)
    assert model.rowCount() == 2


# ---------------------------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("mode, ds", [("vector", 1.0), ("raster", 2.0)])
def test_annotation_layer_draws_objects_in_place(qtbot, window, mode, ds):
    view, store, layer = window.view, window.session.store, window.annotation_tools.layer
    assert layer.name == "Annotations" and layer in view.layers()
    assert any(row.layer is layer for row in window.layers_panel.rows)  # listed in the layers panel
    if mode == "raster":
        layer.vector_limit = 0
    store.add(Annotation(box(1000, 500, 1120, 590), color=GREEN))
    flush(qtbot)
    view.show_region(900, 400, ds)
    settle(qtbot, view)
    assert layer.last_mode == mode
    ys, xs = np.nonzero(colour_mask(grab_rgb(view), GREEN, tol=60))
    # level-0 x 1000..1120, y 500..590 -> screen ((x - 900) / ds, (y - 400) / ds)
    assert xs.min() == pytest.approx(100 / ds, abs=2) and xs.max() == pytest.approx(220 / ds, abs=2)
    assert ys.min() == pytest.approx(100 / ds, abs=2) and ys.max() == pytest.approx(190 / ds, abs=2)

    # an edit repaints at once, without waiting for a background render
    store.add(Annotation(box(1200, 500, 1260, 560), color=GREEN))
    flush(qtbot)
    img = grab_rgb(view)
    assert colour_mask(img[int(100 / ds) - 2:int(160 / ds) + 3, int(300 / ds) - 2:int(360 / ds) + 3], GREEN, 60).any()

    # the selection is highlighted (white) along the shape
    window.annotation_tools.set_selection([store.snapshot()[0].id])
    white = (grab_rgb(view) > 235).all(axis=-1)
    assert white[int(100 / ds) - 3:int(190 / ds) + 4, int(100 / ds) - 3:int(220 / ds) + 4].sum() > 20


def test_many_objects_are_drawn_as_a_raster_dots_and_outlines(qtbot, window):
    view, store, layer = window.view, window.session.store, window.annotation_tools.layer
    rng = np.random.default_rng(1)
    xy = rng.uniform((50, 50), (1486, 974), (4000, 2))
    store.add([Annotation(Point(x, y).buffer(1.5), "detection", "HSIL", source="model:test") for x, y in xy],
              undoable=False)  # 3 level-0 px: under 2 screen px when the slide fits the window
    marker = Annotation(box(700, 480, 740, 520), "detection", source="model:test", color=GREEN)
    small = Annotation(box(300, 300, 310, 310), "detection", source="model:test", color=BLUE)  # ~5.6 px on screen
    store.add([marker, small], undoable=False)
    flush(qtbot)
    view.zoom_to_fit()
    settle(qtbot, view)
    assert layer.last_mode == "raster"
    img = grab_rgb(view)
    red = colour_mask(img, HSIL_RED, tol=50)
    assert red.sum() > 4000 * 4  # a dot for each detection
    for x, y in xy[:50]:
        p = view.map_from_slide(QPointF(x, y))
        assert colour_mask(img[int(p.y()) - 1:int(p.y()) + 2, int(p.x()) - 1:int(p.x()) + 2], HSIL_RED, 50).any()
    # larger objects keep their outline: the marker's left edge, not its inside
    edge, inside = view.map_from_slide(QPointF(700, 500)), view.map_from_slide(QPointF(720, 500))
    assert colour_mask(img[int(edge.y()) - 2:int(edge.y()) + 3, int(edge.x()) - 2:int(edge.x()) + 3], GREEN, 60).any()
    assert not colour_mask(img[int(inside.y()) - 2:int(inside.y()) + 3, int(inside.x()) - 2:int(inside.x()) + 3],
                           GREEN, 60).any()
    # a few pixels wide: a small ring around its box, hollow in the middle
    c = view.map_from_slide(QPointF(305, 305))
    ring = colour_mask(img[int(c.y()) - 4:int(c.y()) + 5, int(c.x()) - 4:int(c.x()) + 5], BLUE, 60)
    assert ring.sum() >= 8 and not ring[4, 4]


# -------------------------------------------------------------------------------------------------- files
def _ground_truth_annotations(small_slide, n=25):
    return read_geojson(small_slide.geojson, source="ground-truth").annotations[:n]


def test_geojson_export_import_round_trip_with_bounds_offset(qtbot, window, small_slide, tmp_path, dialogs):
    tools, store = window.annotation_tools, window.session.store
    originals = _ground_truth_annotations(small_slide)
    region = Annotation(box(100, 120, 600, 500), "annotation", "Region*")
    store.add([*originals, region])
    window.session.slide.bounds = (1200, 340, 1536, 1024)  # as OpenSlide reports for a scanner that crops
    flush(qtbot)

    out = tmp_path / "export" / "case"
    out.parent.mkdir()
    with qtbot.waitSignal(tools.files.jobFinished, timeout=20000) as done:
        tools.files.export_annotations(out)  # no suffix: .geojson is added
    assert done.args[:2] == ["export", True]
    path = out.with_suffix(".geojson")
    features = json.loads(path.read_text())["features"]
    assert len(features) == len(originals) + 1
    x, y = features[0]["geometry"]["coordinates"][0][0]
    ox, oy = originals[0].geometry.exterior.coords[0]
    assert (x, y) == pytest.approx((ox - 1200, oy - 340))  # QuPath's frame: bounds subtracted

    store.clear()
    flush(qtbot)
    with qtbot.waitSignal(tools.files.jobFinished, timeout=20000) as done:
        tools.files.import_annotations(path)
    assert done.args[:2] == ["import", True]
    flush(qtbot)
    back = {a.id: a for a in store.snapshot()}
    assert len(back) == len(originals) + 1
    for a in [*originals, region]:
        b = back[a.id]
        assert b.geometry.equals_exact(a.geometry, 1e-6) and b.class_name == a.class_name
        assert b.object_type == a.object_type
    assert back[originals[0].id].nucleus.equals_exact(originals[0].nucleus, 1e-6)
    assert tools.undo_action.text() == "&Undo Import case.geojson"

    # importing the same file again adds nothing; only the selection can be exported
    with qtbot.waitSignal(tools.files.jobFinished, timeout=20000):
        tools.files.import_annotations(path)
    flush(qtbot)
    assert len(store) == len(originals) + 1 and "skipped" in window.statusBar().currentMessage()
    tools.set_selection([region.id])
    selected = tmp_path / "selected.geojson"
    with qtbot.waitSignal(tools.files.jobFinished, timeout=20000):
        tools.files.export_annotations(selected, selection_only=True)
    (only,) = json.loads(selected.read_text())["features"]
    assert only["id"] == region.id and only["geometry"]["coordinates"][0][0] in ([600 - 1200, 120 - 340],
                                                                                  [100 - 1200, 120 - 340])


def test_file_menu_actions_use_the_file_dialogs(qtbot, window, small_slide, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    tools = window.annotation_tools
    names = [a.text() for a in tools.files.file_menu.actions()]
    quit_index = names.index("&Quit")
    assert names[quit_index - 5:quit_index] == ["&Import Annotations…", "&Export Annotations…", "Export Re&gions…",
                                                "Save &Snapshot…", ""]
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(small_slide.geojson), "")))
    with qtbot.waitSignal(tools.files.jobFinished, timeout=20000):
        tools.files.import_action.trigger()
    flush(qtbot)
    assert len(window.session.store) == len(small_slide.features)
    assert all(a.source == "ground-truth" or a.source == "import" for a in window.session.store.snapshot())


def test_malformed_geojson_shows_an_error_and_loses_nothing(qtbot, window, tmp_path, dialogs):
    tools, store = window.annotation_tools, window.session.store
    tools.add_drawn(box(10, 10, 60, 60), "rectangle")
    tools.add_drawn(Point(80, 90), "point")
    flush(qtbot)
    before = store.snapshot()
    bad = tmp_path / "broken.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [\n{"type": "Feature", "geometry": {"type": "Poly')
    with qtbot.waitSignal(tools.files.jobFinished, timeout=20000) as done:
        tools.files.import_annotations(bad)
    assert done.args[:2] == ["import", False]
    kind, title, text = dialogs[-1]
    assert kind == "critical" and title == "Import annotations"
    assert "broken.geojson" in text and "line 2" in text and "Nothing was imported" in text
    assert store.snapshot() == before and store.undo_label == "Add point"

    wrong = tmp_path / "wrong.geojson"
    wrong.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": "oops"}, "properties": {}}]}))
    with qtbot.waitSignal(tools.files.jobFinished, timeout=20000) as done:
        tools.files.import_annotations(wrong)
    assert done.args[1] is False and dialogs[-1][0] == "critical"
    assert store.snapshot() == before
    assert tools.files.import_action.isEnabled()  # ready for the next try


def test_snapshot_is_the_view_with_overlays_as_png(qtbot, window, tmp_path):
    tools, view, store = window.annotation_tools, window.view, window.session.store
    store.add(Annotation(box(1000, 500, 1120, 590), color=GREEN))
    flush(qtbot)
    view.show_region(900, 400, 1.0)
    settle(qtbot, view)
    with qtbot.waitSignal(tools.files.jobFinished, timeout=20000) as done:
        tools.files.save_snapshot(tmp_path / "snap")
    assert done.args[:2] == ["snapshot", True]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("snap", ".snap"))) == ["snap.png"]
    img = np.asarray(Image.open(tmp_path / "snap.png").convert("RGB"))
    assert img.shape[:2] == (view.height(), view.width())
    ys, xs = np.nonzero(colour_mask(img, GREEN, tol=60))
    assert xs.min() == pytest.approx(100, abs=2) and ys.max() == pytest.approx(190, abs=2)
    assert (img.std(axis=(0, 1)) > 5).all()  # the slide is there too, not just the overlay
