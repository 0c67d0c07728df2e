"""Analysis of the open slide from the viewer: the Analysis menu, the running job, its progress, its layers.

A pathologist starts an analysis and keeps reading the slide while it runs, so nothing here blocks: the analysis
runs in a process of its own (``analysis_worker``), where the backbone cannot compete with the GUI thread for the
interpreter, and a thread here follows it (``jobs.AnalysisJob`` driving an ``analysis_run.ViewerRun``). The tiles of
the view are analysed first and the job follows the viewport as it moves, every finished batch colours the heat map, cells appear as they
are found, and the status bar shows how far it is with a Cancel button. Results are kept per slide and bundle, so a
second run continues the first and a slide opened again shows what was found at once.

The panel is also where other panels learn which model bundle is in use (``bundle_folder()``, ``bundleChanged``)
and whether an analysis is running (``is_running()``).
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMenu, QMessageBox, QProgressBar, QToolButton

from core.errors import CervixFMError
from core.models.bundle import MANIFEST, read_bundle_spec

from .analysis_host import analysis_host
from .analysis_run import BATCH_SIZE, RunRequest, ViewerRun, load_saved
from .jobs import AnalysisJob
from .layers import HeatmapLayer, VectorLayer
from .score_panel import ScorePanel, describe_status
from .workers import Mailbox, lower_thread_priority

log = logging.getLogger(__name__)

SETTINGS_BUNDLE = "analysis/bundle"
SETTINGS_FIND_CELLS = "analysis/findCells"
#: While the view moves, the running job is told about it at most this often.
FOLLOW_MS = 300
#: Closing a slide waits this long for the batch in flight; a job still busy after that finishes on its own
#: thread (it writes only its own result folder) while the window carries on.
STOP_WAIT_S = 5.0
SHUTDOWN_WAIT_S = 10.0

NO_BUNDLE_TEXT = (
    "No model bundle is chosen, so there is nothing to analyse the slide with.\n\n"
    "A model bundle is a folder with a bundle.json file that names the backbone weights (e.g. CervixFM.pth), how "
    "tiles are prepared, and the heads that score tiles, cells and the whole slide. Make one from your weights "
    "with\n\n"
    "    cervixfm bundle init my_bundle --checkpoint CervixFM.pth \\\n"
    "        --head tiles:tile-classifier:head.safetensors\n\n"
    "then choose its folder with Analysis › Model Bundle…. The README (\"Analysing slides\") explains bundles "
    "and where the weights go.\n\n"
    "Without weights, Analysis › Build Demo Bundle… trains a small demonstration model on synthetic smears here "
    "(about ten minutes; not for diagnosis) so you can try the analysis, the galleries and the similar-cell search.")
DEMO_BUNDLE_TEXT = (
    "Build a demonstration model bundle on this computer?\n\n"
    "It generates synthetic Pap smears, pretrains a small ViT on them with CervixFM's DINOv2 recipe and trains "
    "cell and tile classifiers on their ground truth: about ten minutes on two CPU cores, in the background. "
    "It is trained on synthetic data only and is not for diagnosis.")


class AnalysisPanel(QObject):
    #: The model bundle folder in use changed (a ``Path``, or None when there is none).
    bundleChanged = Signal(object)

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.view = window.view
        #: The analysis process (shared by the viewer's windows; tests give a panel its own).
        self.host = analysis_host()
        #: How that process loads a bundle's model (None: the bundle's own backbone and heads; tests slow it down).
        self.model_loader = None
        #: Tiles per batch of the next run (tests use small batches to see many of them).
        self.batch_size = BATCH_SIZE
        self._bundle: Path | None = self._initial_bundle()
        self._job: AnalysisJob | None = None
        self._run: ViewerRun | None = None
        self._run_token = 0
        self._mode = ""  # "slide" or "view" while a job runs
        self._started = 0.0
        self._retired: list[AnalysisJob] = []
        self._overlays = None
        self._layers: list = []
        self._load_token = 0
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._deliver)
        self._follow_timer = QTimer(self, singleShot=True, interval=FOLLOW_MS, timeout=self._follow_view)
        self.demo_build = None  # the DemoBundleJob while one runs
        self._demo_dialog = None
        self._build_menu()
        self._build_status_widgets()
        self._build_dock()
        window.sessionChanged.connect(self._session_changed)
        window.slideOpened.connect(lambda _path: self._update_actions())
        window.slideClosed.connect(self._update_actions)
        self.view.viewChanged.connect(self._view_changed)
        self._update_actions()

    # --------------------------------------------------------------------------------------------- public
    def bundle_folder(self) -> Path | None:
        return self._bundle

    def is_running(self) -> bool:
        return self._job is not None

    def set_bundle(self, folder: str | Path) -> bool:
        """Use the bundle in ``folder`` after checking its manifest (no weights are loaded here); a folder that is
        not a usable bundle is explained in a message box and changes nothing."""
        folder = Path(folder)
        try:
            spec = read_bundle_spec(folder)
        except CervixFMError as exc:
            self.window.show_error("Model bundle", f"{exc}\n\nThe bundle in use stays "
                                   f"{self._bundle if self._bundle else 'unset'}.")
            return False
        changed = self._bundle is None or folder.resolve() != self._bundle.resolve()
        self._bundle = folder
        self.window.settings.setValue(SETTINGS_BUNDLE, str(folder))
        self.window.settings.sync()
        self._show_bundle_name(spec.name)
        if changed:
            self.bundleChanged.emit(folder)
            if not self.is_running():  # a running job keeps its bundle; the new one applies to the next run
                self._remove_layers()
                self.score_panel.clear()
                self._load_saved()
        return True

    def choose_bundle(self) -> None:
        start = str(self._bundle.parent if self._bundle else Path.home())
        folder = QFileDialog.getExistingDirectory(self.window, "Choose a model bundle folder (with bundle.json)",
                                                  start)
        if folder:
            self.set_bundle(folder)

    def build_demo_bundle(self, out_dir: str | Path | None = None, *, quick: bool = False,
                          confirm: bool = True) -> bool:
        """Train the demo bundle in the background (``training.demo_bundle``) and use it when it is ready.
        Returns whether a build started."""
        from .demo_bundle_job import DemoBundleJob, default_demo_bundle_folder
        from .thread_job import job_progress_dialog

        window = self.window
        if self.demo_build is not None and self.demo_build.running():
            return False
        folder = Path(out_dir) if out_dir is not None else default_demo_bundle_folder()
        exists = (folder / MANIFEST).is_file()
        if confirm:
            text = DEMO_BUNDLE_TEXT + (f"\n\nThe demo bundle at {folder} will be replaced." if exists else "")
            answer = QMessageBox.question(window, "Build demo bundle", text)
            if answer != QMessageBox.StandardButton.Yes:
                return False
        job = self.demo_build = DemoBundleJob(folder, quick=quick, force=exists, parent=self)
        # not modal: the slide stays usable meanwhile
        dialog = self._demo_dialog = job_progress_dialog(window, "Building the demo bundle…", job, maximum=1000,
                                                         modal=False)
        job.progressed.connect(self._demo_progress)
        job.finished.connect(self._demo_finished)
        job.failed.connect(lambda msg: (self._demo_done(), window.show_error("Demo bundle", msg)))
        job.cancelled.connect(lambda: (self._demo_done(),
                                       window.statusBar().showMessage("Demo bundle build cancelled.", 6000)))
        job.start()
        dialog.show()
        return True

    def _demo_progress(self, fraction: float, message: str) -> None:
        if self._demo_dialog is not None:
            self._demo_dialog.setValue(int(round(1000 * max(0.0, min(1.0, fraction)))))
            self._demo_dialog.setLabelText(message)

    def _demo_done(self) -> None:
        if self._demo_dialog is not None:
            self._demo_dialog.close()
            self._demo_dialog.deleteLater()
            self._demo_dialog = None

    def _demo_finished(self, folder: str) -> None:
        self._demo_done()
        self.window.demo_bundle = Path(folder)
        if self.set_bundle(folder):
            self.window.statusBar().showMessage(f"Demo bundle ready ({folder}): Analysis › Analyse View or "
                                                "Analyse Slide to try it.", 15000)

    def analyse_view(self) -> None:
        """The tiles (and, with Find Cells, the cells) of the visible region only."""
        self._start(view_only=True)

    def analyse_slide(self) -> None:
        """Every tile of the cell-bearing area, the visible region first, following the view as it moves."""
        self._start(view_only=False)

    def cancel(self) -> None:
        """Stop the running analysis after the batch in flight; what was done is kept and shown."""
        if self._job is None:
            return
        self._run.cancel()
        self._job.cancel()
        self.progress_label.setText("Cancelling after the current batch…")
        self.cancel_button.setEnabled(False)
        self.cancel_action.setEnabled(False)

    def shutdown(self) -> None:
        """The window closes: stop the job and wait for it (bounded), so no thread outlives what it reports to."""
        self._load_token += 1
        if self.demo_build is not None and self.demo_build.running():
            self.demo_build.cancel()  # stops at the next tile or iteration; the bundle stays unbuilt, nothing half-written
            self.demo_build.wait(SHUTDOWN_WAIT_S)
        self._stop_job(SHUTDOWN_WAIT_S)
        for job in self._retired:
            job.wait(SHUTDOWN_WAIT_S)
        self._retired = [job for job in self._retired if job.is_running()]

    # ------------------------------------------------------------------------------------------- building
    def _initial_bundle(self) -> Path | None:
        """The bundle used last if it is still there, else the installed demo bundle."""
        last = self.window.settings.value(SETTINGS_BUNDLE, "")
        if last and (Path(str(last)) / MANIFEST).is_file():
            return Path(str(last))
        return self.window.demo_bundle

    def _build_menu(self) -> None:
        window = self.window
        bar = window.menuBar()
        menu = self.menu = QMenu("&Analysis", bar)
        actions = bar.actions()
        view_action = window.view_menu.menuAction()
        after = actions[actions.index(view_action) + 1] if view_action in actions[:-1] else None
        if after is not None:
            bar.insertMenu(after, menu)
        else:
            bar.addMenu(menu)
        self.bundle_action = QAction("Model &Bundle…", self, triggered=self.choose_bundle)
        self.bundle_action.setStatusTip("Choose the folder of the model bundle (bundle.json) that analyses slides")
        self.bundle_info_action = QAction("", self, enabled=False)
        self.analyse_view_action = QAction("Analyse &View", self, triggered=self.analyse_view)
        self.analyse_view_action.setStatusTip("Analyse the tiles of the visible region only")
        self.analyse_slide_action = QAction("Analyse &Slide", self, triggered=self.analyse_slide)
        self.analyse_slide_action.setStatusTip("Analyse the whole slide, the visible region first; an earlier run "
                                               "is continued, not repeated")
        self.find_cells_action = QAction("Find &Cells", self, checkable=True)
        self.find_cells_action.setChecked(window.settings.value(SETTINGS_FIND_CELLS, False, type=bool))
        self.find_cells_action.setStatusTip("After the tiles, find, outline and classify every cell")
        self.find_cells_action.toggled.connect(lambda on: window.settings.setValue(SETTINGS_FIND_CELLS, on))
        self.cancel_action = QAction("Ca&ncel Analysis", self, shortcut="Ctrl+.", triggered=self.cancel)
        self.build_demo_action = QAction("Build &Demo Bundle…", self, triggered=lambda: self.build_demo_bundle())
        self.build_demo_action.setStatusTip("Train a small demonstration model on synthetic smears (about ten "
                                            "minutes; not for diagnosis)")
        menu.addActions([self.bundle_action, self.bundle_info_action, self.build_demo_action])
        menu.addSeparator()
        menu.addActions([self.analyse_view_action, self.analyse_slide_action, self.find_cells_action,
                         self.cancel_action])
        menu.addSeparator()
        self._show_bundle_name(None)

    def _build_status_widgets(self) -> None:
        sb = self.window.statusBar()
        self.progress_label = QLabel("")
        self.progress_bar = QProgressBar()
        self.progress_bar.setFixedWidth(150)
        self.progress_bar.setMaximumHeight(14)
        self.progress_bar.setTextVisible(False)
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.setToolTip("Stop the analysis (Ctrl+.); what is done is kept")
        self.cancel_button.clicked.connect(self.cancel)
        for i, w in enumerate((self.progress_label, self.progress_bar, self.cancel_button)):
            sb.insertPermanentWidget(i, w)
            w.hide()

    def _build_dock(self) -> None:
        window = self.window
        self.score_panel = ScorePanel()
        dock = self.score_dock = QDockWidget("Slide Score", window)
        dock.setObjectName("slideScoreDock")
        dock.setWidget(self.score_panel)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        window.splitDockWidget(window.layers_dock, dock, Qt.Orientation.Vertical)
        toggle = dock.toggleViewAction()
        toggle.setText("Slide &Score Panel")
        self.menu.addAction(toggle)

    def _show_bundle_name(self, name: str | None) -> None:
        if self._bundle is None:
            self.bundle_info_action.setText("No bundle chosen")
            return
        self.bundle_info_action.setText(f"Bundle: {name or self._bundle.name}")
        self.bundle_info_action.setToolTip(str(self._bundle))

    def _update_actions(self) -> None:
        have_slide = self.view.source is not None
        running = self.is_running()
        self.analyse_view_action.setEnabled(have_slide and not running)
        self.analyse_slide_action.setEnabled(have_slide and not running)
        self.cancel_action.setEnabled(running)
        self.bundle_action.setEnabled(not running)
        self.find_cells_action.setEnabled(not running)

    # -------------------------------------------------------------------------------------------- running
    def _visible_region(self) -> tuple[float, float, float, float] | None:
        source = self.view.source
        if source is None:
            return None
        w, h = source.size
        r: QRectF = self.view.visible_rect()
        x0, y0 = max(0.0, r.left()), max(0.0, r.top())
        x1, y1 = min(float(w), r.right()), min(float(h), r.bottom())
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def _start(self, view_only: bool) -> None:
        window = self.window
        source = self.view.source
        if source is None or self.is_running():
            return
        if self._bundle is None:
            QMessageBox.information(window, "No model bundle", NO_BUNDLE_TEXT)
            return
        region = self._visible_region()
        if view_only and region is None:
            window.statusBar().showMessage("The view shows no part of the slide: nothing to analyse.", 8000)
            return
        slide = source.slide
        request = RunRequest(
            Path(window.slide_path or slide.path), self._bundle,
            mpp=tuple(slide.mpp) if slide.mpp_source == "user" else None,
            region=region if view_only else None, cells=self.find_cells_action.isChecked(),
            batch_size=self.batch_size, loader=self.model_loader)
        self._load_token += 1  # a saved result still loading must not land on top of the new run
        self._overlays = None  # the old layers stay on screen until the new run's replace them
        self._run_token += 1
        token = self._run_token
        run = ViewerRun(request, self.host, partial(self._post_from_run, token))
        job = AnalysisJob(run.prepare, region=region)  # no Qt parent: alive as long as its thread needs it
        job.progress.connect(partial(self._on_progress, token))
        job.batchFinished.connect(partial(self._on_batch, token))
        job.finished.connect(partial(self._on_end, token, False))
        job.cancelled.connect(partial(self._on_end, token, True))
        job.failed.connect(partial(self._on_failed, token))
        self._job, self._run, self._mode = job, run, "view" if view_only else "slide"
        self._started = time.monotonic()
        self.score_panel.show_model(self._bundle.name, "Loading the model…")
        self.score_panel.show_running()
        self._show_progress("Loading the model…", 0, 0)
        self._update_actions()
        job.start()

    def _post_from_run(self, token: int, message: tuple) -> None:
        """Worker thread: a ``ViewerRun`` message, tagged with the run it belongs to."""
        self._mail.post((message[0], token, message[1]))

    def _current(self, token: int) -> bool:
        return token == self._run_token and self._job is not None

    def _stop_job(self, timeout: float) -> None:
        job, run = self._job, self._run
        self._job = self._run = None
        self._run_token += 1  # whatever the old job still reports is ignored
        self._follow_timer.stop()
        self._hide_progress()
        self._retired = [j for j in self._retired if j.is_running()]
        if job is not None:
            run.abandon()
            job.cancel()
            if not job.wait(timeout):
                log.warning("the analysis is still finishing its batch; it stops on its own")
                self._retired.append(job)
        self._update_actions()

    def _view_changed(self, rect: QRectF, zoom: float) -> None:
        if self._job is not None and self._mode == "slide" and not self._follow_timer.isActive():
            self._follow_timer.start()

    def _follow_view(self) -> None:
        region = self._visible_region()
        if self._job is not None and region is not None:
            self._job.prioritise_region(*region)

    # ------------------------------------------------------------------------------------- job reports
    def _on_progress(self, token: int, done: int, total: int, rate: float, eta) -> None:
        if not self._current(token) or self._run is None or self._run.cancelled:
            return
        where = "view" if self._mode == "view" else "slide"
        self._show_progress(f"Analysing {where}: {done:,}/{total:,} tiles · {rate:.1f} tiles/s · "
                            f"{_eta_text(eta)}", done, total)
        self.score_panel.set_status(f"Analysing: {done:,} of {total:,} tiles.")

    def _on_batch(self, token: int, indices, outputs) -> None:
        if self._current(token) and self._overlays is not None:
            self._overlays.apply_tiles(indices, outputs)
            self.score_panel.refresh_soon()

    def _on_end(self, token: int, cancelled: bool, result) -> None:
        if not self._current(token):
            return
        cells_stopped = (result.cells or {}).get("status") == "cancelled"
        seconds = time.monotonic() - self._started
        self._job = self._run = None
        self._follow_timer.stop()
        self._hide_progress()
        self._update_actions()
        if self.window.session is not None:
            self.window.session.set_result(result)
        self.score_panel.show_result(result)
        if self._overlays is not None:
            self.score_panel.set_cells(self._overlays.cells, _cell_status(result))
        stopped = cancelled or cells_stopped
        self.window.statusBar().showMessage(
            f"Analysis {'stopped' if stopped else 'finished'} after {_duration(seconds)}: {describe_status(result)}",
            10000)

    def _on_failed(self, token: int, message: str) -> None:
        if not self._current(token):
            return
        self._job = self._run = None
        self._follow_timer.stop()
        self._hide_progress()
        self._update_actions()
        self.score_panel.set_status("The analysis failed; see the message.")
        self.window.show_error("Analysis failed", message)

    def _deliver(self) -> None:
        for kind, token, payload in self._mail.take():
            if kind in ("saved", "saved_failed"):
                if token != self._load_token or self._job is not None:
                    continue
                if kind == "saved":
                    self._show_saved(payload)
                else:
                    self._saved_failed(payload)
                continue
            if not self._current(token):
                continue
            if kind == "plan":
                self._show_plan(payload)
            elif kind == "tiles":
                self._tiles_done(payload)
            elif kind == "cells_progress":
                self._cells_progress(payload)
            elif kind == "cells":
                self._cells_done(*payload)

    def _show_plan(self, overlays) -> None:
        self._remove_layers()
        self._overlays = overlays
        self._add_layers(overlays)
        self.score_panel.show_model(overlays.model_name, "Analysing…")
        self.score_panel.set_tile_scores(overlays.primary_scores, "" if overlays.tile_scores else
                                         "This bundle has no tile classifier: no tile scores.")
        self.score_panel.set_cells(overlays.cells, "searching" if overlays.cells is not None else "")
        self._show_progress("Starting…", 0, 0)

    def _tiles_done(self, result) -> None:
        if self.window.session is not None:
            self.window.session.set_result(result)
        self.score_panel.show_result(result)
        if self._overlays is not None and self._overlays.cells is not None:
            self.score_panel.set_status(describe_status(result) + " Finding cells…")
            self._show_progress("Finding cells…", 0, 0)

    def _cells_progress(self, p) -> None:
        if self._run is not None and self._run.cancelled:
            return
        self._show_progress(f"Finding cells: {p.cells:,} found · {p.tiles_done:,}/{p.tiles_total:,} regions · "
                            f"{_eta_text(p.eta_s)}", p.tiles_done, p.tiles_total)
        self.score_panel.refresh_soon()

    def _cells_done(self, table, cells, nuclei) -> None:
        """The stage's final cells (border duplicates dropped, keys = rows of ``table``) replace the live ones,
        keeping the visibility and opacity the user chose meanwhile."""
        overlays = self._overlays
        if overlays is None:
            return
        old = [layer for layer in self._layers if isinstance(layer, VectorLayer)]
        settings = {id(layer.objects): (layer.visible, layer.opacity) for layer in old}
        for layer in old:
            self._drop_layer(layer)
        for objects, previous in ((nuclei, overlays.nuclei), (cells, overlays.cells)):
            layer = self._vector_layer(objects)
            visible, opacity = settings.get(id(previous), (layer.visible, layer.opacity))
            layer.set_visible(visible)
            layer.set_opacity(opacity)
            self._add_layer(layer)
        overlays.cells, overlays.nuclei = cells, nuclei
        if self.window.session is not None:
            self.window.session.set_cells(table)
        self.score_panel.set_cells(cells, "")

    # ---------------------------------------------------------------------------------------- saved results
    def _load_saved(self) -> None:
        """Read this slide's last result with the current bundle on a thread; it is shown when it arrives."""
        session = self.window.session
        bundle = self._bundle
        if session is None or bundle is None or self._job is not None:
            return
        self._load_token += 1
        token = self._load_token
        path = session.slide_path
        mail = self._mail

        def work() -> None:
            lower_thread_priority()
            try:
                mail.post(("saved", token, load_saved(path, bundle)))
            except CervixFMError as exc:
                mail.post(("saved_failed", token, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a damaged cache must not take the viewer down
                log.exception("loading the saved analysis of %s", path)
                mail.post(("saved_failed", token, f"{type(exc).__name__}: {exc}"))

        threading.Thread(target=work, name="analysis-load", daemon=True).start()

    def _show_saved(self, saved) -> None:
        if saved is None:
            self._forget_result()
            return
        self._remove_layers()
        self._overlays = saved.overlays
        self._add_layers(saved.overlays)
        session = self.window.session
        if session is not None:
            session.set_result(saved.result)
            if saved.cells is not None:
                session.set_cells(saved.cells)
        self.score_panel.show_result(saved.result)
        self.score_panel.set_tile_scores(saved.overlays.primary_scores, "" if saved.overlays.tile_scores else
                                         "This bundle has no tile classifier: no tile scores.")
        self.score_panel.set_cells(saved.overlays.cells, _cell_status(saved.result))
        self.window.statusBar().showMessage(f"Earlier analysis shown: {describe_status(saved.result)}", 8000)

    def _saved_failed(self, message: str) -> None:
        self._forget_result()
        self.window.statusBar().showMessage(f"The earlier analysis could not be read ({message}); Analyse Slide "
                                            "computes it again.", 12000)

    def _forget_result(self) -> None:
        """Nothing to show for this slide and bundle: the session must not keep another bundle's result either
        (the galleries read it)."""
        self.score_panel.clear()
        session = self.window.session
        if session is not None and session.result is not None:
            session.set_result(None)
        if session is not None and session.cells is not None:
            session.set_cells(None)

    # ----------------------------------------------------------------------------------------------- layers
    def _add_layers(self, overlays) -> None:
        """Heat maps below, outlines on top: nuclei, then cells."""
        for scores in overlays.tile_scores.values():
            self._add_layer(HeatmapLayer(scores, scores.name, cmap="inferno", vmin=0.0, vmax=1.0, fade=True,
                                         opacity=0.6))
        if overlays.coverage is not None:
            self._add_layer(HeatmapLayer(overlays.coverage, overlays.coverage.name, cmap="viridis", vmin=0.0,
                                         vmax=1.0, opacity=0.25))
        for scores in overlays.attention.values():  # hidden at first: two heat maps at once read as mud
            self._add_layer(HeatmapLayer(scores, scores.name, cmap="magma", vmin=0.0, vmax=1.0, opacity=0.5,
                                         visible=False))
        for objects in (overlays.nuclei, overlays.cells):
            if objects is not None:
                self._add_layer(self._vector_layer(objects))

    @staticmethod
    def _vector_layer(objects) -> VectorLayer:
        thin = objects.class_names == ("Nucleus",)
        return VectorLayer(objects, objects.name, line_width=1.0 if thin else 1.6, opacity=0.9 if thin else 1.0)

    def _add_layer(self, layer) -> None:
        self._layers.append(layer)
        self.view.add_layer(layer)

    def _drop_layer(self, layer) -> None:
        if layer in self._layers:
            self._layers.remove(layer)
        if layer in self.view.layers():  # else the window has already removed and closed it
            self.view.remove_layer(layer)
            layer.close()
        layer.deleteLater()

    def _remove_layers(self) -> None:
        for layer in list(self._layers):
            self._drop_layer(layer)
        self._overlays = None

    # ------------------------------------------------------------------------------------------------ session
    def _session_changed(self, session) -> None:
        self._load_token += 1
        self._stop_job(STOP_WAIT_S)
        self._remove_layers()
        self.score_panel.clear()
        self._update_actions()
        if session is not None:
            self._load_saved()

    # -------------------------------------------------------------------------------------------- status bar
    def _show_progress(self, text: str, done: int, total: int) -> None:
        self.progress_label.setText(text)
        self.progress_bar.setRange(0, max(0, total))
        if total:
            self.progress_bar.setValue(done)
        for w in (self.progress_label, self.progress_bar, self.cancel_button):
            w.show()
        cancelling = self._run is not None and self._run.cancelled
        self.cancel_button.setEnabled(not cancelling)

    def _hide_progress(self) -> None:
        for w in (self.progress_label, self.progress_bar, self.cancel_button):
            w.hide()
        self.progress_label.setText("")


def _cell_status(result) -> str:
    status = (result.cells or {}).get("status", "")
    return {"complete": "", "partial": "view only", "cancelled": "search stopped early"}.get(status, status)


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return "under a second"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _eta_text(eta) -> str:
    return "estimating time left" if eta is None else f"about {_duration(eta)} left"
