"""The suspicious-cell gallery on a real analysed slide: ranking, thumbnails read from the slide, keyboard review
decisions stored as undoable annotations that survive reopening the slide, navigation to a cell; and the thumbnail
grid itself with thousands of items."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from PySide6.QtCore import Qt
from shapely.geometry import Polygon

from cell_review_support import CLASSES, analysed_smear, settle_worker_threads
from viewer_support import grab_rgb, shown_window


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    return analysed_smear(tmp_path_factory.mktemp("review"))


@pytest.fixture
def slide(analysed, tmp_path):
    """A private copy of the slide: its sidecar (the decisions) starts empty in every test."""
    path = tmp_path / analysed[0].name
    shutil.copy(analysed[0], path)
    return path


@pytest.fixture
def window(qtbot, settings, dialogs):
    w = shown_window(qtbot, settings, (1300, 900))
    yield w
    w.close()
    settle_worker_threads(qtbot)


def show_cells(qtbot, window, result):
    """What the analysis panel does when a cell stage is shown: the result, then its cells."""
    panel = window.suspicious_cells
    window.session.set_result(result)
    window.session.set_cells(result.read_cells().table)
    qtbot.waitUntil(lambda: panel.review is not None and panel.gallery.count() > 0, timeout=10000)
    panel.dock.show()
    panel.dock.raise_()
    return panel


def press(qtbot, widget, key):
    widget.setFocus()
    qtbot.keyClick(widget, key)


def decisions(window):
    return [a for a in window.session.store.snapshot() if a.source == "review"]


def test_cells_are_listed_best_first_per_class_with_abnormal_classes_first(qtbot, window, slide, analysed):
    result = analysed[2]
    assert window.open_path(slide)
    panel = window.suspicious_cells
    assert panel.gallery.count() == 0 and "no analysed cells" in panel.gallery.empty_text
    panel = show_cells(qtbot, window, result)
    names = [panel.class_box.itemData(i) for i in range(panel.class_box.count())]
    assert names == ["abnormality", "LSIL", "HSIL", "Superficial squamous", "Intermediate squamous", "Parabasal",
                     "Inflammatory"]
    table = panel.review.table
    abnormality = table.heads["cells"]["abnormality"]
    gallery = panel.gallery
    assert gallery.count() == len(table)
    shown = [gallery.item(r).data for r in range(gallery.count())]
    assert np.all(np.diff(abnormality[shown]) <= 0)
    # the same order the analysis recorded (its ranked list in result.json) and the same cell ids
    ranked = result.cells["ranked"]["cells"]["abnormality"]
    assert [panel.review.ids[c] for c in shown[:len(ranked)]] == [r["id"] for r in ranked]
    assert gallery.item(0).title == f"{ranked[0]['score']:.3f}"
    probs = table.heads["cells"]["probs"]
    assert panel.select_ranking("LSIL")
    lsil = [gallery.item(r).data for r in range(gallery.count())]
    assert len(lsil) == int((probs.argmax(1) == CLASSES.index("LSIL")).sum()) > 1
    assert np.all(np.diff(probs[lsil, CLASSES.index("LSIL")]) <= 0)
    assert {gallery.item(r).subtitle for r in range(gallery.count())} == {"LSIL"}
    assert panel.count_label.text() == f"0 of {len(lsil)} reviewed"


def test_thumbnails_are_read_from_the_slide_off_the_gui_thread(qtbot, window, slide, analysed):
    from core.slides import open_slide

    assert window.open_path(slide)
    panel = show_cells(qtbot, window, analysed[2])
    gallery = panel.gallery
    first, last = gallery.visible_rows()
    assert first == 0 and last >= 3
    item = gallery.item(0)
    qtbot.waitUntil(lambda: all(gallery.loader.image(gallery.item(r).picture) is not None
                                for r in range(first, last + 1)), timeout=10000)
    qtbot.wait(50)
    rect = gallery.visualRect(gallery.gallery_model.index(0))
    size = gallery.thumb_px
    x0, y0 = rect.x() + (rect.width() - size) // 2, rect.y() + 5
    shot = grab_rgb(gallery.viewport())[y0:y0 + size, x0:x0 + size].astype(int)
    with open_slide(slide) as s:
        want = s.read_scaled(item.picture.x, item.picture.y, item.picture.w, item.picture.h, size, size).astype(int)
    corner = (slice(0, size // 4), slice(0, size // 4))  # away from the centre ticks and the badge
    assert np.abs(shot[corner] - want[corner]).mean() < 4
    assert np.abs(shot - want).mean() < 12


def test_enter_centres_the_view_on_the_cell_and_outlines_it(qtbot, window, slide, analysed):
    assert window.open_path(slide)
    panel = show_cells(qtbot, window, analysed[2])
    gallery = panel.gallery
    gallery.set_current_row(2)
    press(qtbot, gallery, Qt.Key.Key_Return)
    cell = gallery.item(2).data
    cx, cy = panel.review.table.centres[cell]
    view = window.view
    assert view.center.x() == pytest.approx(cx) and view.center.y() == pytest.approx(cy)
    assert view.magnification() == pytest.approx(40)
    layer = next(layer for layer in view.layers() if layer.name == "Selected cell")
    assert np.allclose(layer.outline, panel.review.table.cell_ring(cell))
    qtbot.wait(50)
    shot = grab_rgb(view)
    cyan = (shot[..., 0] < 60) & (shot[..., 1] > 200) & (shot[..., 2] > 220)
    assert cyan.sum() > 50
    ys, xs = np.nonzero(cyan)
    assert abs(xs.mean() - view.width() / 2) < 60 and abs(ys.mean() - view.height() / 2) < 60
    # a click does the same
    qtbot.mouseClick(gallery.viewport(), Qt.MouseButton.LeftButton, pos=gallery.visualRect(
        gallery.gallery_model.index(0)).center())
    cx, cy = panel.review.table.centres[gallery.item(0).data]
    assert view.center.x() == pytest.approx(cx) and view.center.y() == pytest.approx(cy)


def test_accept_reject_reclassify_are_review_annotations_each_one_undo_step(qtbot, window, slide, analysed):
    assert window.open_path(slide)
    panel = show_cells(qtbot, window, analysed[2])
    gallery, review, store = panel.gallery, panel.review, window.session.store
    cells = [gallery.item(r).data for r in range(3)]
    press(qtbot, gallery, Qt.Key.Key_A)
    assert gallery.current_row() == 1  # on to the next cell
    press(qtbot, gallery, Qt.Key.Key_X)
    press(qtbot, gallery, Qt.Key.Key_C)
    menu = panel.menu
    assert menu.isVisible()
    texts = [a.text() for a in menu.actions()]
    assert texts[0].startswith("&1") and any("HSIL" in t for t in texts)
    assert menu.actions()[4].data() == "HSIL"
    qtbot.keyClick(menu, Qt.Key.Key_5)  # digits pick a class
    made = {a.review.target: a for a in decisions(window)}
    assert set(made) == {review.ids[c] for c in cells}
    first, second, third = (made[review.ids[c]] for c in cells)
    assert first.review.status == "accepted" and first.object_type == "cell"
    assert first.class_name == review.labels[cells[0]] and first.review.previous == review.labels[cells[0]]
    assert first.geometry.equals(Polygon(review.table.cell_ring(cells[0])))
    assert second.review.status == "rejected"
    assert third.review.status == "reclassified" and third.class_name == "HSIL"
    assert third.review.previous == review.labels[cells[2]]
    qtbot.waitUntil(lambda: panel.count_label.text().startswith("3 of"))
    assert [gallery.item(r).badge for r in range(4)] == ["accepted", "rejected", "reclassified", None]
    assert gallery.item(2).subtitle.endswith("→ HSIL")
    assert store.undo_label == "Reclassify cell"
    # a new decision about a cell replaces the old one, still one step
    gallery.set_current_row(0)
    press(qtbot, gallery, Qt.Key.Key_X)
    assert [a.review.status for a in decisions(window) if a.review.target == review.ids[cells[0]]] == ["rejected"]
    store.undo()
    qtbot.waitUntil(lambda: gallery.item(0).badge == "accepted")
    for _ in range(3):
        store.undo()
    qtbot.waitUntil(lambda: not decisions(window) and gallery.item(0).badge is None)
    assert panel.count_label.text().startswith("0 of") and not panel.reviewed.any()


def test_hide_reviewed_keeps_the_place_and_counts(qtbot, window, slide, analysed):
    assert window.open_path(slide)
    panel = show_cells(qtbot, window, analysed[2])
    gallery = panel.gallery
    total = gallery.count()
    panel.hide_reviewed.setChecked(True)
    gallery.set_current_row(1)
    second, third = gallery.item(1).data, gallery.item(2).data
    press(qtbot, gallery, Qt.Key.Key_A)
    assert gallery.count() == total - 1 and gallery.current_item().data == third
    assert panel.count_label.text() == f"1 of {total} reviewed · {total - 1} left"
    assert second not in [gallery.item(r).data for r in range(gallery.count())]
    window.session.store.undo()
    qtbot.waitUntil(lambda: gallery.count() == total)
    panel.hide_reviewed.setChecked(False)
    assert panel.count_label.text() == f"0 of {total} reviewed"


def test_decisions_survive_closing_and_reopening_the_slide(qtbot, window, slide, analysed):
    result = analysed[2]
    assert window.open_path(slide)
    panel = show_cells(qtbot, window, result)
    gallery = panel.gallery
    press(qtbot, gallery, Qt.Key.Key_A)
    press(qtbot, gallery, Qt.Key.Key_X)
    targets = {a.review.target: a.review.status for a in decisions(window)}
    window.close_slide()
    sidecar = slide.with_name(slide.name + ".cervixfm.geojson")
    assert sidecar.is_file() and panel.gallery.count() == 0
    assert window.open_path(slide)
    assert {a.review.target: a.review.status for a in decisions(window)} == targets
    panel = show_cells(qtbot, window, result)
    assert [panel.gallery.item(r).badge for r in range(3)] == ["accepted", "rejected", None]
    assert panel.count_label.text().startswith("2 of")


def test_cells_without_a_classifier_are_listed_by_detection_score(qtbot, window, slide, analysed):
    assert window.open_path(slide)
    table = analysed[2].read_cells().table
    table.heads.clear()
    window.session.set_cells(table)
    panel = window.suspicious_cells
    qtbot.waitUntil(lambda: panel.review is not None)
    assert panel.class_box.count() == 1 and "detection score" in panel.class_box.itemText(0)
    assert panel.gallery.count() == len(table) and panel.review.head is None
    press(qtbot, panel.gallery, Qt.Key.Key_A)
    assert decisions(window)[0].review.status == "accepted"
    window.session.set_cells(None)
    assert panel.gallery.count() == 0 and "no analysed cells" in panel.gallery.empty_text


def test_the_grid_stays_fluid_with_thousands_of_items(qtbot, tmp_path, analysed):
    """5,000 items over real slide regions: setting, painting, scrolling and keyboard moves take milliseconds,
    and only what is on screen (plus a page ahead) is read."""
    from cervixfm_app.viewer.gallery import Gallery, GalleryItem, SlideRegion

    path = str(analysed[0])

    class Lazy:
        def __len__(self):
            return 5000

        def __getitem__(self, row):
            if not 0 <= row < 5000:
                raise IndexError(row)
            x, y = (row * 37) % 1800, (row * 53) % 1300
            return GalleryItem(row, SlideRegion(path, x, y, 224, 224), f"{1 - row / 5000:.3f}", "cell")

    gallery = Gallery()
    qtbot.addWidget(gallery)
    gallery.resize(420, 600)
    gallery.show()
    qtbot.waitExposed(gallery)
    start = time.perf_counter()
    gallery.set_items(Lazy())
    gallery.repaint()
    assert time.perf_counter() - start < 1.0
    first, last = gallery.visible_rows()
    assert first == 0 and 6 <= last < 40
    qtbot.waitUntil(lambda: gallery.loader.image(gallery.item(last).picture) is not None, timeout=10000)
    assert gallery.loader.reads <= 3 * (last + 1)  # the visible rows and the look-ahead, not 5,000
    start = time.perf_counter()
    for _ in range(20):
        qtbot.keyClick(gallery, Qt.Key.Key_PageDown)
    gallery.repaint()
    assert time.perf_counter() - start < 2.0
    row = gallery.current_row()
    assert row > 100
    first, last = gallery.visible_rows()
    assert first <= row <= last
    qtbot.waitUntil(lambda: gallery.loader.image(gallery.item(row).picture) is not None, timeout=10000)
    qtbot.keyClick(gallery, Qt.Key.Key_End)
    assert gallery.current_row() == 4999
    activated = []
    gallery.itemActivated.connect(activated.append)
    qtbot.keyClick(gallery, Qt.Key.Key_Enter)
    assert activated[0].key == 4999
    gallery.release_slides()
    settle_worker_threads(qtbot)
