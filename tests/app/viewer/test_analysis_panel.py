"""Analysis from the viewer: the Analysis menu, a background job on a tiny real bundle (random ViT-S-sized test
backbone, real tile / cell / ABMIL head files), live heat maps and cells, the slide score panel, cancelling,
closing mid-run, broken bundles, and results found again when the slide is reopened."""

from __future__ import annotations

import shutil
import threading
import time
from functools import partial

import numpy as np
import pytest

from viewer_support import grab_rgb, shown_window, slow_bundle_model, tiny_bundle

TILE_CLASSES = ["NILM", "SIL"]
CELL_CLASSES = ["Superficial squamous", "LSIL", "HSIL"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("bundle"), TILE_CLASSES, CELL_CLASSES)


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    """Results, caches and the (absent) demo bundle live in the test's own folder."""
    monkeypatch.setenv("CERVIXFM_HOME", str(tmp_path / "home"))


@pytest.fixture
def window(qtbot, settings, dialogs):
    w = shown_window(qtbot, settings)
    yield w
    w.close()


def _open(qtbot, window, path):
    assert window.open_path(path)
    qtbot.waitUntil(lambda: window.view.source.is_idle(), timeout=20000)


def _wait_idle(qtbot, panel, timeout=60000):
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=timeout)


def _layers(window):
    return {layer.name: layer for layer in window.view.layers()}


def _analysis_layer_names(window):
    """The analysis panel's layers, bottom to top (other panels add their own layers to the view too)."""
    prefixes = ("Tile abnormality", "Analysed tiles", "Attention", "Cells", "Nuclei")
    return [layer.name for layer in window.view.layers() if layer.name.startswith(prefixes)]


def _finite(scores):
    return int(np.isfinite(scores.values).sum())


def _slow_device(panel, seconds_per_batch):
    """The analysis process loads the bundle's real model as if on a slower device (each batch takes at least this
    long), so the test can act while the analysis is still going on this tiny slide."""
    panel.model_loader = partial(slow_bundle_model, seconds_per_batch)


def _slow_analysis(qtbot, window, bundle, view_slide, seconds_per_batch=0.05):
    """Analyse Slide on the view slide, one tile per batch, each taking at least ``seconds_per_batch``."""
    panel = window.analysis
    panel.set_bundle(bundle)
    _open(qtbot, window, view_slide.path)
    panel.batch_size = 1
    _slow_device(panel, seconds_per_batch)
    panel.analyse_slide()
    return panel


def test_analyse_slide_streams_a_heat_map_sets_the_result_and_scores_the_slide(qtbot, window, bundle, view_slide):
    from cervixfm_app.viewer.analysis_run import saved_result_folder
    from cervixfm_app.viewer.layers import HeatmapLayer

    panel = window.analysis
    titles = [a.text() for a in window.menuBar().actions()]
    assert titles.index("&Analysis") == titles.index("&View") + 1
    changed = []
    panel.bundleChanged.connect(changed.append)
    assert panel.set_bundle(bundle) and changed == [bundle] and panel.bundle_folder() == bundle
    _open(qtbot, window, view_slide.path)
    panel.batch_size = 2
    _slow_device(panel, 0.1)
    growth, followed = [], []
    redraws, started = panel.score_panel.refresh_count, time.monotonic()
    panel.analyse_slide()
    assert panel.is_running() and panel.progress_bar.isVisible() and panel.cancel_button.isVisible()
    assert not panel.analyse_slide_action.isEnabled() and panel.cancel_action.isEnabled()
    job, run = panel._job, panel._run
    job.batchFinished.connect(lambda idx, out: growth.append(_finite(panel._overlays.primary_scores)))
    original = run.prioritise_region
    run.prioritise_region = lambda *r: (followed.append(r), original(*r))
    qtbot.waitUntil(lambda: bool(growth), timeout=30000)
    window.view.set_view(2200, 1600, 2.0)  # the user moves: the job follows the viewport
    _wait_idle(qtbot, panel)
    elapsed = time.monotonic() - started

    result = window.session.result
    assert result.status == "complete" and not panel.progress_bar.isVisible()
    assert panel.score_panel.refresh_count - redraws <= elapsed / 0.25 + 3  # the histogram redraws at <= 4 Hz
    n = len(result.tiles)
    assert len(growth) >= 2 and growth[0] < n and growth == sorted(growth) and growth[-1] == n  # live, batch by batch
    x0, y0, x1, y1 = followed[-1]  # told (throttled) where the user looks now
    assert x0 < 2200 < x1 and y0 < 1600 < y1 and len(followed) <= 3
    layers = _layers(window)
    heat = layers["Tile abnormality — tiles"]
    assert isinstance(heat, HeatmapLayer) and _finite(heat.scores) == n
    probs = result.tile_outputs["tiles.probs"]
    got = heat.scores.values[result.tile_outputs["grid_index"]]
    np.testing.assert_allclose(got, probs[:, 1], rtol=1e-5)  # P(abnormal) = 1 - P(NILM)
    attention = layers["Attention — slide (percentile)"]
    assert _finite(attention.scores) == n and not attention.visible
    assert float(np.nanmax(attention.scores.values)) == pytest.approx(1.0)

    score = result.slide_scores["slide"]
    assert score["label"] in TILE_CLASSES
    assert panel.score_panel.head_texts() == [f"slide: {score['label']}"]
    assert "Tiny test bundle" in panel.score_panel.model_label.text()
    assert panel.score_panel.status_label.text().startswith("Complete")
    qtbot.waitUntil(lambda: panel.score_panel.histogram_counts.sum() == n, timeout=2000)
    assert (saved_result_folder(view_slide.path, bundle) / "result.json").is_file()

    window.view.zoom_to_fit()
    qtbot.waitUntil(lambda: window.view.source.is_idle(), timeout=20000)
    heat.set_visible(False)
    plain = grab_rgb(window.view).astype(int)
    heat.set_opacity(1.0)
    heat.set_visible(True)
    coloured = grab_rgb(window.view).astype(int)
    assert np.abs(coloured - plain).sum(axis=2).astype(bool).mean() > 0.05  # the heat map is on screen


def test_cancel_stops_promptly_and_the_next_run_continues(qtbot, window, bundle, view_slide):
    panel = _slow_analysis(qtbot, window, bundle, view_slide)
    qtbot.waitUntil(lambda: panel._overlays is not None and _finite(panel._overlays.primary_scores) >= 1,
                    timeout=30000)
    total = len(panel._run.boxes)
    journal = panel._run.folder / ".work"
    start = time.monotonic()
    done_then = len(list(journal.glob("part-*.npz")))  # batches the worker has finished (one tile each)
    panel.cancel_action.trigger()
    assert "Cancelling" in panel.progress_label.text() and not panel.cancel_button.isEnabled()
    _wait_idle(qtbot, panel, timeout=10000)
    assert time.monotonic() - start < 3.0
    first = window.session.result
    # the batch in flight is finished (and one more may have ended between the count and the click), no more
    assert first.status == "cancelled" and done_then <= len(first.tiles) <= done_then + 2 < total
    assert "Stopped" in panel.score_panel.status_label.text() and not panel.score_panel.head_texts()
    assert not panel.progress_bar.isVisible() and panel.analyse_slide_action.isEnabled()

    computed = []
    panel.analyse_slide()
    panel._job.batchFinished.connect(lambda idx, out: computed.extend(idx.tolist()))
    qtbot.waitUntil(lambda: panel._overlays is not None, timeout=30000)
    earlier = set(first.tile_outputs["grid_index"].tolist())
    assert _finite(panel._overlays.primary_scores) >= len(earlier)  # the heat map starts where the last run stopped
    _wait_idle(qtbot, panel)
    assert window.session.result.status == "complete" and len(window.session.result.tiles) == total
    assert not earlier & set(computed)  # resumed, nothing analysed twice
    assert _analysis_layer_names(window) == ["Tile abnormality — tiles", "Attention — slide (percentile)"]


def test_find_cells_adds_cell_layers_and_reopening_shows_the_saved_result(qtbot, window, bundle, view_slide):
    from cervixfm_app.viewer.layers import VectorLayer
    from core.cells import CellTable

    panel = window.analysis
    panel.set_bundle(bundle)
    panel.find_cells_action.setChecked(True)
    _open(qtbot, window, view_slide.path)
    cell_signals = []
    window.session.cellsChanged.connect(cell_signals.append)
    panel.analyse_slide()
    _wait_idle(qtbot, panel, timeout=90000)

    table = window.session.cells
    assert isinstance(table, CellTable) and len(table) > 20 and cell_signals[-1] is table
    assert window.session.result.cells["status"] == "complete"
    layers = _layers(window)
    cells, nuclei = layers["Cells"], layers["Nuclei (segmentation)"]
    assert isinstance(cells, VectorLayer) and isinstance(nuclei, VectorLayer)
    assert len(cells.objects) == len(nuclei.objects) == len(table)
    assert cells.objects.class_names == tuple(CELL_CLASSES)
    snap = cells.objects.snapshot()
    np.testing.assert_array_equal(snap.classes_of(np.arange(len(snap))), table.heads["cells"]["probs"].argmax(1))
    qtbot.waitUntil(lambda: f"<b>{len(table):,}</b> cells" in panel.score_panel.cells_label.text(), timeout=2000)
    names = _analysis_layer_names(window)
    assert names == ["Tile abnormality — tiles", "Attention — slide (percentile)", "Nuclei (segmentation)",
                     "Cells"]

    panel.analyse_slide()  # the complete result is reused, and its layers replace the old ones
    _wait_idle(qtbot, panel)
    assert _analysis_layer_names(window) == names

    window.close_slide()
    assert not window.view.layers() and panel.score_panel.head_texts() == []
    _open(qtbot, window, view_slide.path)
    qtbot.waitUntil(lambda: window.session.result is not None and window.session.cells is not None, timeout=20000)
    assert _analysis_layer_names(window) == names
    assert window.session.result.status == "complete" and len(window.session.cells) == len(table)
    assert len(_layers(window)["Cells"].objects) == len(table)
    assert panel.score_panel.head_texts() and not panel.is_running()


def test_analyse_view_analyses_only_the_visible_tiles(qtbot, window, bundle, view_slide):
    panel = window.analysis
    panel.set_bundle(bundle)
    _open(qtbot, window, view_slide.path)
    window.view.set_view(1500, 1100, 1.0, motion=False)
    r = window.view.visible_rect()
    panel.analyse_view_action.trigger()
    _wait_idle(qtbot, panel)
    result = window.session.result
    assert result.status == "partial" and len(result.tiles) > 0 and not result.slide_scores
    x, y, w, h = result.tiles.T
    assert ((x < r.right()) & (x + w > r.left()) & (y < r.bottom()) & (y + h > r.top())).all()
    assert len(result.tiles) < result.summary["tiles_cell_area"]
    assert panel.score_panel.status_label.text().startswith("Partial")
    assert "whole slide" in panel.score_panel.slide_note.text()


def test_closing_the_window_or_the_slide_during_an_analysis_stops_it_cleanly(qtbot, window, bundle, view_slide):
    panel = _slow_analysis(qtbot, window, bundle, view_slide)
    qtbot.waitUntil(lambda: panel._overlays is not None, timeout=30000)
    job = panel._job
    assert job.is_running()
    assert window.open_path(view_slide.path)  # another slide (here: the same file afresh) replaces the session
    assert not job.is_running() and not panel.is_running() and not panel.progress_bar.isVisible()
    assert panel.analyse_slide_action.isEnabled()

    panel.analyse_slide()
    qtbot.waitUntil(lambda: panel._overlays is not None and _finite(panel._overlays.primary_scores) > 0,
                    timeout=30000)
    job = panel._job
    assert job.is_running()
    window.close()
    assert not job.is_running()
    assert not [t for t in threading.enumerate() if t.name == "analysis-job"]
    qtbot.wait(50)  # queued reports of the stopped job are delivered to nobody, without errors


def test_missing_and_broken_bundles_explain_themselves(qtbot, window, dialogs, bundle, view_slide, tmp_path,
                                                       settings):
    panel = window.analysis
    assert panel.bundle_folder() is None
    _open(qtbot, window, view_slide.path)
    panel.analyse_slide_action.trigger()
    kind, title, text = dialogs[-1]
    assert kind == "information" and "bundle.json" in text and "README" in text and not panel.is_running()

    empty = tmp_path / "not_a_bundle"
    empty.mkdir()
    assert not panel.set_bundle(empty)
    kind, title, text = dialogs[-1]
    assert kind == "critical" and "bundle.json" in text and panel.bundle_folder() is None

    broken = tmp_path / "broken_bundle"
    shutil.copytree(bundle, broken)
    (broken / "heads" / "tiles.safetensors").write_bytes(b"not a head file")
    assert panel.set_bundle(broken)  # the manifest is fine; the damage shows when the weights load
    panel.analyse_slide()
    _wait_idle(qtbot, panel)
    kind, title, text = dialogs[-1]
    assert kind == "critical" and title == "Analysis failed" and "tiles.safetensors" in text
    assert window.isVisible() and panel.analyse_slide_action.isEnabled() and not panel.progress_bar.isVisible()
    assert not [layer for layer in window.view.layers() if layer.name.startswith("Tile abnormality")]

    from cervixfm_app.viewer.main_window import MainWindow

    again = MainWindow(settings=settings)  # the bundle chosen last is remembered
    qtbot.addWidget(again)
    assert again.analysis.bundle_folder() == broken
    again.close()


def test_build_demo_bundle_from_the_menu_makes_it_the_bundle_in_use(qtbot, window, dialogs, tmp_path):
    """Analysis › Build Demo Bundle… trains the (quick, test-sized) demo bundle in the background, and the panel
    then analyses with it; the no-bundle message points there."""
    from core.models.bundle import read_bundle_spec

    panel = window.analysis
    assert panel.bundle_folder() is None
    out = tmp_path / "bundles" / "demo"
    seen = []
    panel.bundleChanged.connect(seen.append)
    assert panel.build_demo_bundle(out, quick=True, confirm=False)
    assert not panel.build_demo_bundle(out, quick=True, confirm=False)  # one build at a time
    qtbot.waitUntil(lambda: not panel.demo_build.running(), timeout=180000)
    qtbot.waitUntil(lambda: panel.bundle_folder() is not None, timeout=5000)
    assert panel.bundle_folder() == out and seen == [out] and window.demo_bundle == out
    assert read_bundle_spec(out).heads and not dialogs
    assert panel._demo_dialog is None


def test_build_demo_bundle_can_be_cancelled_leaving_nothing(qtbot, window, tmp_path):
    panel = window.analysis
    out = tmp_path / "bundles" / "demo"
    assert panel.build_demo_bundle(out, quick=True, confirm=False)
    panel.demo_build.cancel()
    qtbot.waitUntil(lambda: not panel.demo_build.running(), timeout=120000)
    qtbot.waitUntil(lambda: panel._demo_dialog is None, timeout=5000)
    assert panel.bundle_folder() is None and not out.exists()
    assert [p.name for p in out.parent.iterdir()] == [] if out.parent.exists() else True
