"""Click-to-retrieve in the viewer on a real analysed slide with a tiny random ViT bundle: the Find Similar Cells
tool (S) on a click or a box, hits with distances and labels, navigation to a hit (opening another slide when the
hit lies there), reference atlases (label vote, remembered, bad folders explained) and plain messages when a bundle
or cells are missing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF, Qt

from cell_review_support import analysed_smear, settle_worker_threads
from viewer_support import grab_rgb, send_mouse, shown_window


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    return analysed_smear(tmp_path_factory.mktemp("similar_view"))


@pytest.fixture(scope="module")
def model(analysed):
    from core.pipeline.analysis_model import model_from_bundle

    return model_from_bundle(analysed[1], device="cpu")


@pytest.fixture(scope="module")
def table(analysed):
    return analysed[2].read_cells().table


@pytest.fixture
def slide(analysed, tmp_path):
    path = tmp_path / analysed[0].name
    shutil.copy(analysed[0], path)
    return path


@pytest.fixture
def window(qtbot, settings, dialogs, analysed, monkeypatch):
    w = shown_window(qtbot, settings, (1300, 900))
    monkeypatch.setattr(w.analysis, "bundle_folder", lambda: analysed[1], raising=False)
    yield w
    w.close()
    settle_worker_threads(qtbot)


def open_with_cells(qtbot, window, slide, result):
    assert window.open_path(slide)
    window.session.set_result(result)
    window.session.set_cells(result.read_cells().table)
    return window.similar_cells


def wait_result(qtbot, panel, previous=None):
    qtbot.waitUntil(lambda: panel.result is not None and panel.result is not previous, timeout=20000)
    return panel.result


def test_clicking_a_cell_with_the_tool_finds_that_cell_first(qtbot, window, slide, analysed, table):
    panel = open_with_cells(qtbot, window, slide, analysed[2])
    view = window.view
    i = len(table) // 3
    cx, cy = table.centres[i]
    view.set_view(cx, cy, 1.0)
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_S)
    assert view.tool is panel.tool and panel.tool_action.isChecked() and panel.dock.isVisible()
    pos = view.map_from_slide(QPointF(cx + 8, cy - 6))  # near the nucleus: the query snaps onto it
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=pos.toPoint())
    result = wait_result(qtbot, panel)
    best = result.hits[0]
    assert best.cell == i and best.distance < 1e-4 and best.source == "This slide"
    gallery = panel.gallery
    assert gallery.count() == len(result.hits) == 24
    assert gallery.item(0).title == f"#1  d {best.distance:.3f}" and gallery.item(0).subtitle == best.label
    distances = [gallery.item(r).data.distance for r in range(gallery.count())]
    assert distances == sorted(distances)
    assert "Query at" in panel.query_text.text() and not panel.query_image.pixmap().isNull()
    # the query crop is outlined on the slide while the tool is active
    qtbot.wait(30)
    shot = grab_rgb(view)
    yellow = (shot[..., 0] > 230) & (shot[..., 1] > 200) & (shot[..., 2] < 60)
    assert yellow.sum() > 200
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    assert view.tool is None and not panel.tool_action.isChecked()


def test_a_box_dragged_around_a_cell_queries_it(qtbot, window, slide, analysed, table):
    panel = open_with_cells(qtbot, window, slide, analysed[2])
    view = window.view
    i = 2
    cx, cy = table.centres[i]
    view.set_view(cx, cy, 1.0)
    panel.tool_action.trigger()
    a = view.map_from_slide(QPointF(cx - 60, cy - 50))
    b = view.map_from_slide(QPointF(cx + 70, cy + 55))
    send_mouse(view, "press", a.x(), a.y())
    send_mouse(view, "move", (a.x() + b.x()) / 2, (a.y() + b.y()) / 2)
    send_mouse(view, "move", b.x(), b.y())
    assert view.center.x() == pytest.approx(cx)  # the tool owns the drag: no panning
    send_mouse(view, "release", b.x(), b.y())
    assert wait_result(qtbot, panel).hits[0].cell == i


def test_clicking_a_hit_shows_it_on_the_slide(qtbot, window, slide, analysed, table):
    panel = open_with_cells(qtbot, window, slide, analysed[2])
    panel.query_at(*table.centres[0])
    result = wait_result(qtbot, panel)
    gallery = panel.gallery
    qtbot.waitUntil(lambda: gallery.loader.image(gallery.item(3).picture) is not None, timeout=10000)
    hit = gallery.item(3).data
    qtbot.mouseClick(gallery.viewport(), Qt.MouseButton.LeftButton,
                     pos=gallery.visualRect(gallery.gallery_model.index(3)).center())
    view = window.view
    assert (view.center.x(), view.center.y()) == pytest.approx(tuple(table.centres[hit.cell]))
    assert view.magnification() == pytest.approx(40)
    layer = next(layer for layer in view.layers() if layer.name == "Selected cell")
    assert np.allclose(layer.outline, table.cell_ring(hit.cell))
    assert result.hits[3] is hit


def test_a_hit_on_another_slide_opens_that_slide_and_goes_there(qtbot, window, slide, analysed, table, model,
                                                                tmp_path):
    """A labelled library index whose cells lie on another slide file: its hits open that slide."""
    from core.retrieval import CellIndex, RowTable
    from core.retrieval.identity import identity_of_model
    from core.slides import open_slide

    other = tmp_path / "elsewhere" / "other_case.tiff"
    other.parent.mkdir()
    shutil.copy(analysed[0], other)
    pick = [1, 4, 7, 10, 13]
    with open_slide(other) as s:
        crops = [s.read_scaled(*table.crop_boxes[i], 224, 224) for i in pick]
    folder = tmp_path / "library"
    index = CellIndex.create(folder, 64, backbone=identity_of_model(model), kind="cells",
                             tile={"size": 224, "mpp": 0.5})
    index.add(model.encode(crops)["features"],
              RowTable.from_columns(source="cell", slide=str(other), boxes=table.crop_boxes[pick],
                                    label=["LSIL"] * len(pick), n=len(pick)))
    index.save()
    panel = open_with_cells(qtbot, window, slide, analysed[2])
    panel.add_atlas(folder)
    qtbot.waitUntil(lambda: str(folder.resolve()) in panel.atlases, timeout=10000)
    panel.query_at(*table.centres[7])
    result = wait_result(qtbot, panel)
    library = [r for r in range(panel.gallery.count()) if panel.gallery.item(r).data.source == "library"]
    first = panel.gallery.item(library[0]).data
    assert first.slide == str(other) and first.distance < 1e-3 and first.box == tuple(table.crop_boxes[7])
    assert result.lists[1].suggestion[0] == "LSIL"
    assert panel.open_hit(panel.gallery.item(library[0]))
    assert window.slide_path == other
    view = window.view
    assert (view.center.x(), view.center.y()) == pytest.approx(first.centre)
    # the hits stay listed on the new slide, and a hit of the first slide takes the reader back
    assert panel.gallery.count() == len(result.hits)
    assert panel.open_hit(panel.gallery.item(0)) and window.slide_path == slide


def test_reference_atlases_vote_are_remembered_and_bad_folders_are_explained(qtbot, window, slide, analysed,
                                                                            table, model, tmp_path, dialogs,
                                                                            settings):
    from core.retrieval.atlas import atlas_from_features
    from core.retrieval.identity import identity_of_model
    from core.slides import open_slide

    panel = open_with_cells(qtbot, window, slide, analysed[2])
    bad = tmp_path / "not_an_atlas"
    bad.mkdir()
    panel.add_atlas(bad)
    qtbot.waitUntil(lambda: len(dialogs) > 0, timeout=10000)
    kind, title, text = dialogs[-1]
    assert kind == "critical" and title == "Cannot add reference atlas" and "not a CervixFM cell index" in text
    assert panel.atlases == []
    # a real atlas: crops of the slide's cells as image files with labels
    images = tmp_path / "atlas_images"
    images.mkdir()
    pick = list(range(0, len(table), 4))[:8]
    labels = ["NILM" if k % 2 else "HSIL" for k in range(len(pick))]
    with open_slide(slide) as s:
        crops = [s.read_scaled(*table.crop_boxes[i], 224, 224) for i in pick]
    names = []
    for i, crop in zip(pick, crops):
        names.append(f"c{i}.png")
        Image.fromarray(crop).save(images / names[-1])
    folder = tmp_path / "atlas"
    atlas_from_features(folder, model.encode(crops)["features"], names, [1 if lab == "NILM" else 0 for lab in labels],
                        ["HSIL", "NILM"], backbone=identity_of_model(model), data_root=images)
    panel.add_atlas(folder)
    qtbot.waitUntil(lambda: panel.atlases == [str(folder.resolve())], timeout=10000)
    assert "atlas" in panel.atlas_label.text()
    panel.query_at(*table.centres[pick[2]])
    result = wait_result(qtbot, panel)
    atlas_hits = result.lists[1]
    assert atlas_hits.hits[0].image == str(images / f"c{pick[2]}.png") and atlas_hits.hits[0].label == labels[2]
    label, confidence, votes = atlas_hits.suggestion
    assert sum(votes.values()) == len(pick) and "suggests <b>" in panel.query_text.text()
    row = next(r for r in range(panel.gallery.count()) if panel.gallery.item(r).data.source == "atlas")
    gallery = panel.gallery
    gallery.scrollTo(gallery.gallery_model.index(row))
    qtbot.waitUntil(lambda: gallery.loader.image(gallery.item(row).picture) is not None, timeout=10000)
    assert not panel.open_hit(gallery.item(row))  # an atlas image is not on a slide: a message, no move
    assert "not on a slide" in window.statusBar().currentMessage()
    # remembered for the next window
    from cervixfm_app.viewer.main_window import MainWindow

    again = MainWindow(settings=settings)
    qtbot.addWidget(again)
    assert again.similar_cells.atlases == [str(folder.resolve())]
    again.similar_cells.forget_atlases()
    assert MainWindow(settings=settings).similar_cells.atlases == []


def test_missing_bundle_or_cells_are_said_plainly(qtbot, window, slide, analysed, monkeypatch):
    panel = window.similar_cells
    assert not panel.query_at(10, 10) and "Open a slide" in panel.query_text.text()
    assert window.open_path(slide)
    assert not panel.query_at(500, 500)
    assert "no analysed cells" in panel.query_text.text() and "Add Reference Atlas" in panel.query_text.text()
    monkeypatch.setattr(window.analysis, "bundle_folder", lambda: None, raising=False)
    window.demo_bundle = None
    window.session.set_cells(analysed[2].read_cells().table)
    assert not panel.query_at(500, 500)
    assert "No model bundle" in panel.query_text.text()
    assert "No model bundle" in window.statusBar().currentMessage()
