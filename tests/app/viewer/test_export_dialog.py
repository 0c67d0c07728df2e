"""File › Export Regions…: selected rectangles/polygons (or the current view) exported at a chosen resolution
with crops, GeoJSON of the objects inside, burnt-in overlays, measurements.csv and a manifest, on a worker thread;
bad folders and cancelling end in a clear message and leave nothing behind."""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import Polygon, box

from core.annotations import read_geojson
from viewer_support import open_private_copy

W, H = 900, 600


@pytest.fixture
def window(qtbot, settings, dialogs, small_slide, tmp_path):
    w = open_private_copy(qtbot, settings, small_slide.path, tmp_path, (W, H))
    cells = read_geojson(small_slide.geojson, source="ground-truth").annotations
    w.session.store.add(cells, undoable=False)
    qtbot.wait(30)
    yield w
    w.close()


def run_export(qtbot, dialog):
    with qtbot.waitSignal(dialog.exported, timeout=30000) as done:
        assert dialog.start()
    return done.args[0]


def test_selected_regions_are_exported_with_objects_overlays_and_measurements(qtbot, window, tmp_path):
    tools, store = window.annotation_tools, window.session.store
    rect = tools.add_drawn(box(200, 100, 712, 484), "rectangle")  # 512 x 384 level-0 px
    tools.set_current_class("Region*")
    poly = tools.add_drawn(Polygon([(800, 200), (1300, 260), (1100, 800)]), "polygon")
    qtbot.wait(30)
    tools.set_selection([rect.id, poly.id])
    dialog = tools.files.open_region_export()
    assert dialog.selection_radio.isChecked() and dialog.selection_radio.text() == "Selected regions (2)"
    dialog.set_resolution(1.0)  # 10x: 4 level-0 px per output pixel on this 0.25 µm/px slide
    assert dialog.resolution_combo.currentText().startswith("10×")
    dialog.burn_check.setChecked(True)
    dialog.folder_edit.setText(str(tmp_path / "exports"))
    assert "2 crops, largest 125 × 150 px" in dialog.estimate_label.text()  # the polygon: 500 x 600 px / 4

    result = run_export(qtbot, dialog)
    folder = result.folder
    assert folder.parent == tmp_path / "exports" and folder.is_dir()
    assert str(folder) in dialog.status_label.text() and dialog.open_button.isVisible()
    assert str(folder) in window.statusBar().currentMessage()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["manifest.json", "measurements.csv", "region_001.geojson", "region_001.png",
                     "region_001_overlay.png", "region_002_Region.geojson", "region_002_Region.png",
                     "region_002_Region_overlay.png"]
    crop = np.asarray(Image.open(folder / "region_001.png"))
    assert crop.shape == (96, 128, 3)
    overlay = np.asarray(Image.open(folder / "region_001_overlay.png"))
    assert (overlay != crop).any()  # objects burnt in

    inside = store.query_geometry(rect.geometry)
    features = json.loads((folder / "region_001.geojson").read_text())["features"]
    assert {f["id"] for f in features} == {a.id for a in inside}
    xs = [c[0] for f in features for c in f["geometry"]["coordinates"][0]]
    assert min(xs) >= -130 and max(xs) <= 128 + 130  # crop pixels, not level-0
    with open(folder / "measurements.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    per_region = {r["region"] for r in rows}
    assert per_region <= {"region_001", "region_002_Region"}
    assert sum(r["region"] == "region_001" for r in rows) == len(inside)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["target_mpp"] == pytest.approx(1.0)
    assert manifest["regions"][0]["level0_box"] == [200, 100, 512, 384]
    assert not [p for p in (tmp_path / "exports").iterdir() if p.name.startswith(".")]  # no temporary left


def test_current_view_is_exported_when_nothing_is_selected(qtbot, window, tmp_path):
    tools, view = window.annotation_tools, window.view
    view.show_region(300, 200, 1.0)
    dialog = tools.files.open_region_export()
    assert not dialog.selection_radio.isEnabled() and dialog.view_radio.isChecked()
    dialog.objects_check.setChecked(False)
    assert not dialog.burn_check.isEnabled()
    dialog.format_combo.setCurrentIndex(1)  # JPEG
    dialog.folder_edit.setText(str(tmp_path))
    result = run_export(qtbot, dialog)
    (entry,) = result.regions
    x, y, w, h = entry["level0_box"]
    assert (x, y) == (300, 200) and (w, h) == (view.width(), view.height())
    assert Image.open(result.folder / entry["image"]).format == "JPEG"
    assert result.objects == 0 and json.loads((result.folder / entry["geojson"]).read_text())["features"] == []


def test_bad_folder_and_cancelling_leave_nothing_behind(qtbot, window, tmp_path, monkeypatch):
    from cervixfm_app.viewer import export_dialog

    tools = window.annotation_tools
    window.view.show_region(0, 0, 1.0)
    dialog = tools.files.open_region_export()
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    dialog.folder_edit.setText(str(a_file))
    assert not dialog.start() and "is a file" in dialog.status_label.text()
    dialog.folder_edit.setText(str(a_file / "sub"))  # cannot be created under a file
    with qtbot.waitSignal(dialog.failed, timeout=30000) as failed:
        assert dialog.start()
    assert "not_a_folder" in failed.args[0] and dialog.status_label.text() == failed.args[0]
    assert dialog.export_button.isEnabled() and dialog.close_button.text() == "Close"

    gate = threading.Event()
    real = export_dialog.export_regions

    def held(*args, **kwargs):  # the real export, started only once the test has pressed Cancel
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(export_dialog, "export_regions", held)
    out = tmp_path / "out"
    dialog.folder_edit.setText(str(out))
    assert dialog.start() and dialog.is_running() and not dialog.export_button.isEnabled()
    dialog.reject()  # Cancel while running cancels; the dialog stays to say so
    gate.set()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=30000)
    assert "cancelled" in dialog.status_label.text() and dialog.result is None
    assert list(out.iterdir()) == []
    assert dialog.isVisible()
    dialog.reject()
    assert not dialog.isVisible()
