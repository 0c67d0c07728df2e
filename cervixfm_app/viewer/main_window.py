"""The viewer's main window: the slide view with its overview and scale bar, the layers panel, menus and the
status bar (cursor position in µm and pixels, magnification, MPP and where it came from).

Opening a slide is the one place where a user's file meets the program, so every failure there (missing file,
unsupported or truncated slide, a decoder error) ends in a message box and the window carries on with whatever it
showed before. Later components (analysis jobs, galleries, annotation tools) hang off ``view``, the
``slideOpened``/``slideClosed`` signals and the menus built here.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QInputDialog, QLabel, QMainWindow, QMessageBox,
                               QProgressDialog, QToolButton)

from core import __version__
from core.errors import CervixFMError

from .layers import LayersPanel, VectorLayer
from .overview import OverviewWidget
from .session import SlideSession
from .thread_job import job_progress_dialog
from .slide_view import MAGNIFICATIONS, SlideView
from .tile_source import TileSource
from .idle_gc import IdleCollector
from .workers import Mailbox, lower_thread_priority

log = logging.getLogger(__name__)

APP_NAME = "CervixFM"
MAX_RECENT = 10
SLIDE_FILTER = ("Slides (*.svs *.tif *.tiff *.ndpi *.vms *.vmu *.scn *.mrxs *.svslide *.bif *.dcm *.png *.jpg "
                "*.jpeg *.bmp);;All files (*)")


class MainWindow(QMainWindow):
    slideOpened = Signal(str)
    slideClosed = Signal()
    #: The ``SlideSession`` of the slide just opened, or None after closing; panels connect here.
    sessionChanged = Signal(object)

    def __init__(self, slide_path: Path | None = None, *, open_demo: bool = False,
                 settings: QSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.resize(1400, 880)
        self.settings = settings if settings is not None else QSettings(APP_NAME, APP_NAME)
        self.slide_path: Path | None = None
        #: Annotations and analysis results of the open slide (``session.SlideSession``), or None.
        self.session: SlideSession | None = None
        self.demo_job = None
        self._progress: QProgressDialog | None = None
        self._gt_mail = Mailbox(self)
        self._gt_mail.arrived.connect(self._ground_truth_loaded)
        self._gt_token = 0

        self.view = SlideView()
        self.setCentralWidget(self.view)
        self.idle_gc = IdleCollector(self.view, self)  # full garbage collections only while the view is still
        self.overview = OverviewWidget()
        self.view.set_corner_widget(self.overview)
        self.overview.hide()
        self.layers_panel = LayersPanel()
        self.layers_panel.set_view(self.view)
        self.layers_dock = QDockWidget("Layers", self)
        self.layers_dock.setObjectName("layersDock")
        self.layers_dock.setWidget(self.layers_panel)
        self.layers_dock.setMinimumWidth(260)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.layers_dock)
        self.resizeDocks([self.layers_dock], [290], Qt.Orientation.Horizontal)

        from .demo import demo_bundle_path

        #: The installed demo bundle folder (analysis uses it when the user has no other), or None.
        self.demo_bundle = demo_bundle_path()
        self._build_status_bar()
        self._build_menus()
        self._install_panels()
        self.view.viewChanged.connect(self._on_view_changed)
        self.view.cursorMoved.connect(self._on_cursor)
        self.view.readFailed.connect(lambda msg: self.statusBar().showMessage(msg, 10000))
        self.overview.jumpRequested.connect(lambda p: self.view.center_on(p.x(), p.y()))
        self.setAcceptDrops(True)
        self.statusBar().showMessage(f"{APP_NAME} {__version__}", 3000)
        self._update_actions()

        if slide_path is not None:
            QTimer.singleShot(0, lambda: self.open_path(slide_path))
        elif open_demo:
            QTimer.singleShot(0, self.open_demo)

    # ------------------------------------------------------------------------------------------------ menus
    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.open_action = QAction("&Open Slide…", self, shortcut=QKeySequence.StandardKey.Open,
                                   triggered=self.choose_and_open)
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addAction(QAction("Open &Demo Slide", self, triggered=self.open_demo))
        file_menu.addSeparator()
        self.close_action = QAction("&Close Slide", self, shortcut=QKeySequence.StandardKey.Close,
                                    triggered=self.close_slide)
        file_menu.addAction(self.close_action)
        file_menu.addSeparator()
        file_menu.addAction(QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close))

        view_menu = self.view_menu = bar.addMenu("&View")
        self.fit_action = QAction("Zoom to &Fit", self, shortcut="0", triggered=self.view.zoom_to_fit)
        self.zoom_in_action = QAction("Zoom &In", self, shortcut=QKeySequence.StandardKey.ZoomIn,
                                      triggered=lambda: self.view.zoom_by(2.0))
        self.zoom_out_action = QAction("Zoom &Out", self, shortcut=QKeySequence.StandardKey.ZoomOut,
                                       triggered=lambda: self.view.zoom_by(0.5))
        view_menu.addActions([self.fit_action, self.zoom_in_action, self.zoom_out_action])
        view_menu.addSeparator()
        self.magnification_actions = []
        for i, mag in enumerate(MAGNIFICATIONS, start=1):
            action = QAction(f"{mag}×", self, shortcut=str(i),
                             triggered=lambda _=False, m=mag: self.view.set_magnification(m))
            action.setStatusTip(f"Show the slide at {mag}x ({10 / mag:g} µm per screen pixel)")
            view_menu.addAction(action)
            self.magnification_actions.append(action)
        view_menu.addSeparator()
        self.overview_action = QAction("&Overview", self, checkable=True, checked=True, shortcut="O",
                                       toggled=self._toggle_overview)
        self.scale_bar_action = QAction("&Scale Bar", self, checkable=True, checked=True,
                                        toggled=self.view.set_scale_bar_visible)
        view_menu.addActions([self.overview_action, self.scale_bar_action])
        layers_toggle = self.layers_dock.toggleViewAction()
        layers_toggle.setText("&Layers Panel")
        view_menu.addAction(layers_toggle)
        view_menu.addSeparator()
        self.set_mpp_action = QAction("Set &MPP…", self, triggered=self.ask_mpp)
        self.set_mpp_action.setStatusTip("Set the slide's microns per pixel when the file has none or a wrong one")
        view_menu.addAction(self.set_mpp_action)
        view_menu.addSeparator()  # the panels' show/hide toggles follow


    def _install_panels(self) -> None:
        """The panels that work on the open slide; each adds its own menus, docks and tools and follows
        ``sessionChanged``. Order matters only for menu order."""
        from .analysis_panel import AnalysisPanel
        from .annotation_tools import AnnotationTools
        from .similar_cells import SimilarCellsPanel
        from .suspicious_cells import SuspiciousCellsPanel

        self.annotation_tools = AnnotationTools(self)
        self.analysis = AnalysisPanel(self)
        self.suspicious_cells = SuspiciousCellsPanel(self)
        self.similar_cells = SimilarCellsPanel(self)
        self._arrange_docks()
        self.help_menu = self.menuBar().addMenu("&Help")
        self.help_menu.addAction(QAction("&About CervixFM", self, triggered=self._about))

    def _arrange_docks(self) -> None:
        """Galleries on the left (they want height and width for thumbnails), what the view shows on the right:
        layers and annotations as tabs above the slide score."""
        left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        galleries = [self.suspicious_cells.dock, self.similar_cells.dock]
        score, annotations = self.analysis.score_dock, self.annotation_tools.dock
        # Qt splits a tabbed dock only as a new tab: lay the right side out again, splitting before tabbing.
        for dock in [self.layers_dock, annotations, score, *galleries]:
            self.removeDockWidget(dock)
        self.addDockWidget(right, self.layers_dock)
        self.splitDockWidget(self.layers_dock, score, Qt.Orientation.Vertical)
        self.tabifyDockWidget(self.layers_dock, annotations)
        for dock in galleries:
            self.addDockWidget(left, dock)
        self.tabifyDockWidget(galleries[0], galleries[1])
        for dock in [self.layers_dock, annotations, score, *galleries]:
            dock.show()
        for dock in galleries:  # shown when there is something in them: cells to review, a similar-cell search
            dock.hide()
        self.layers_dock.raise_()
        self.resizeDocks([self.layers_dock, score], [560, 340], Qt.Orientation.Vertical)
        self.resizeDocks([galleries[0]], [330], Qt.Orientation.Horizontal)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.position_label = QLabel("")
        self.position_label.setMinimumWidth(330)
        self.zoom_label = QLabel("")
        self.zoom_label.setMinimumWidth(120)
        self.mpp_button = QToolButton()
        self.mpp_button.setAutoRaise(True)
        self.mpp_button.clicked.connect(self.ask_mpp)
        for w in (self.position_label, self.zoom_label, self.mpp_button):
            sb.addPermanentWidget(w)
        self.mpp_button.hide()

    def _update_actions(self) -> None:
        have = self.view.source is not None
        for action in [self.close_action, self.fit_action, self.zoom_in_action, self.zoom_out_action,
                       self.set_mpp_action, *self.magnification_actions]:
            action.setEnabled(have)

    def _toggle_overview(self, on: bool) -> None:
        self.overview.setVisible(on and self.view.source is not None)

    # ------------------------------------------------------------------------------------------- opening
    def choose_and_open(self) -> None:
        start = str(self.slide_path.parent) if self.slide_path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open slide", start, SLIDE_FILTER)
        if path:
            self.open_path(Path(path))

    def open_path(self, path: str | Path, mpp: float | None = None, keep_view: bool = False) -> bool:
        """Open a slide; on any failure show why and keep the current slide. Returns whether it opened."""
        from core.slides import open_slide

        path = Path(path)
        slide = None
        try:
            slide = open_slide(path, mpp=mpp)
            source = TileSource(slide, parent=self)
        except CervixFMError as exc:
            self._close_quietly(slide)
            self.show_error("Cannot open slide", str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a damaged file can make any decoder raise; the app stays up
            log.exception("opening %s", path)
            self._close_quietly(slide)
            self.show_error("Cannot open slide", f"{path}: the file could not be read ({type(exc).__name__}: {exc}).")
            return False
        old = self.view.source
        same_slide = self.slide_path is not None and path.resolve() == self.slide_path.resolve()
        new_session = not (keep_view and same_slide and self.session is not None)
        if new_session:
            try:
                session = SlideSession(path, slide, parent=self)
            except CervixFMError as exc:  # e.g. no readable sidecar folder at all: the slide still opens
                log.warning("annotations of %s unavailable: %s", path, exc)
                session = None
            self._end_session()
            self.view.set_tool(None)
            self.view.clear_layers()
            self._gt_token += 1
        else:
            self.session.slide = slide
        self.view.set_source(source, keep_view=keep_view)
        if old is not None:
            old.close()
            old.deleteLater()
        self.slide_path = path
        self.overview.set_image(source.base, source.size)
        self.view.place_corner_widget()
        self.overview.setVisible(self.overview_action.isChecked())
        self.overview.set_viewport(self.view.visible_rect())
        self.setWindowTitle(f"{path.name} — {APP_NAME}")
        self._add_recent(path)
        self._update_actions()
        self._on_view_changed(self.view.visible_rect(), self.view.zoom)
        w, h = source.size
        self.statusBar().showMessage(f"Opened {path.name}: {w:,} × {h:,} px, {slide.level_count} level(s), "
                                     f"{slide.vendor}", 5000)
        self._update_mpp_status()  # after the "opened" line, so a missing-MPP warning is what stays visible
        self.view.setFocus()
        if new_session:
            self.session = session
            if session is not None:
                session.message.connect(lambda msg: self.statusBar().showMessage(msg, 10000))
                for warning in session.load_warnings:
                    self.statusBar().showMessage(f"Annotations: {warning}", 15000)
            self.sessionChanged.emit(session)
        self.slideOpened.emit(str(path))
        return True

    def _end_session(self) -> None:
        """Save and drop the open slide's session (annotations are written before anything is torn down)."""
        session, self.session = self.session, None
        if session is not None:
            session.close()
            self.sessionChanged.emit(None)
            session.deleteLater()

    @staticmethod
    def _close_quietly(slide) -> None:
        if slide is not None:
            try:
                slide.close()
            except Exception:  # noqa: BLE001
                pass

    def close_slide(self) -> None:
        source = self.view.source
        if source is None:
            return
        self._end_session()
        self.view.set_tool(None)
        self.view.clear_layers()
        self._gt_token += 1
        self.view.set_source(None)
        source.close()
        source.deleteLater()
        self.slide_path = None
        self.overview.hide()
        self.mpp_button.hide()
        self.position_label.setText("")
        self.zoom_label.setText("")
        self.setWindowTitle(APP_NAME)
        self._update_actions()
        self.slideClosed.emit()

    def show_error(self, title: str, message: str) -> None:
        self.statusBar().showMessage(message, 10000)
        QMessageBox.critical(self, title, message)

    # ------------------------------------------------------------------------------------------------ MPP
    def _update_mpp_status(self) -> None:
        source = self.view.source
        if source is None:
            self.mpp_button.hide()
            return
        slide = source.slide
        mx, my = slide.mpp
        text = f"{mx:.4g} µm/px" if math.isclose(mx, my, rel_tol=1e-3) else f"{mx:.4g} × {my:.4g} µm/px"
        if slide.mpp_source == "fallback":
            self.mpp_button.setText(f"⚠ {text} assumed — Set MPP…")
            self.mpp_button.setStyleSheet("color: #f0a020; font-weight: bold;")
            note = slide.mpp_note or "the file has no microns-per-pixel metadata"
            self.mpp_button.setToolTip(f"{note.capitalize()}; sizes and magnifications assume {mx:g} µm/px. "
                                       "Click to set the right value (View › Set MPP…).")
            self.statusBar().showMessage(f"Microns per pixel unknown ({note}); assuming {mx:g} µm/px. "
                                         "Use View › Set MPP… to correct it.", 15000)
        else:
            self.mpp_button.setText(f"{text} ({slide.mpp_source})")
            self.mpp_button.setStyleSheet("")
            self.mpp_button.setToolTip("Microns per pixel at full resolution and where the value came from. "
                                       "Click to override.")
        self.mpp_button.show()

    def ask_mpp(self) -> None:
        source = self.view.source
        if source is None or self.slide_path is None:
            return
        value, ok = QInputDialog.getDouble(
            self, "Set microns per pixel", "Microns per pixel at full resolution (0.25 ≈ 40x, 0.5 ≈ 20x):",
            source.slide.mpp[0], 0.02, 20.0, 4)
        if ok:
            self.set_mpp(value)

    def set_mpp(self, mpp: float) -> bool:
        """Reopen the current slide with ``mpp`` µm/px, keeping the view and the overlays."""
        if self.slide_path is None:
            return False
        return self.open_path(self.slide_path, mpp=mpp, keep_view=True)

    # ------------------------------------------------------------------------------------------ status bar
    def _on_view_changed(self, rect: QRectF, zoom: float) -> None:
        source = self.view.source
        if source is None:
            return
        self.overview.set_viewport(rect)
        mag = self.view.magnification()
        percent = zoom * 100
        self.zoom_label.setText(f"{mag:.1f}×  ({percent:.3g}%)")

    def _on_cursor(self, point: QPointF, inside: bool) -> None:
        source = self.view.source
        if source is None or not inside or math.isnan(point.x()):
            self.position_label.setText("")
            return
        w, h = source.size
        x, y = point.x(), point.y()
        if not (0 <= x < w and 0 <= y < h):
            self.position_label.setText("outside the slide")
            return
        mx, my = source.slide.mpp
        self.position_label.setText(f"x {x * mx:,.1f} µm  y {y * my:,.1f} µm   ({int(x):,}, {int(y):,} px)")

    # ---------------------------------------------------------------------------------------------- recent
    def recent_files(self) -> list[str]:
        value = self.settings.value("recentFiles", [])
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value else []
        return [str(v) for v in value]

    def _add_recent(self, path: Path) -> None:
        p = str(path.resolve())
        files = [f for f in self.recent_files() if f != p]
        files.insert(0, p)
        self.settings.setValue("recentFiles", files[:MAX_RECENT])
        self.settings.sync()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        if not files:
            empty = self.recent_menu.addAction("(none)")
            empty.setEnabled(False)
            return
        for i, f in enumerate(files, start=1):
            action = self.recent_menu.addAction(f"&{i % 10} {Path(f).name}")
            action.setToolTip(f)
            action.setStatusTip(f)
            action.triggered.connect(lambda _=False, f=f: self.open_path(Path(f)))
        self.recent_menu.addSeparator()
        self.recent_menu.addAction("Clear Menu", lambda: self.settings.setValue("recentFiles", []))

    # ------------------------------------------------------------------------------------------------ demo
    def open_demo(self) -> None:
        """Open the demo slide, generating it first (once, in the background) when needed."""
        from .demo import DemoSlideJob, demo_slide_path, demo_slide_ready

        if demo_slide_ready():
            if self.open_path(demo_slide_path()):
                self._load_demo_ground_truth()
            return
        if self.demo_job is not None and self.demo_job.running():
            return
        job = self.demo_job = DemoSlideJob(parent=self)
        dialog = self._progress = job_progress_dialog(self, "Preparing the demo slide (first start only)…", job)
        job.progressed.connect(self._demo_progress)
        job.finished.connect(self._demo_finished)
        job.failed.connect(self._demo_failed)
        job.cancelled.connect(self._demo_done)
        job.start()
        dialog.show()

    def _demo_progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.setMaximum(total)
            self._progress.setValue(done)

    def _demo_done(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress.deleteLater()
            self._progress = None

    def _demo_finished(self, path: str) -> None:
        self._demo_done()
        if self.open_path(Path(path)):
            self._load_demo_ground_truth()

    def _demo_failed(self, message: str) -> None:
        self._demo_done()
        self.show_error("Demo slide", message)

    def _load_demo_ground_truth(self) -> None:
        """Read the demo's ground truth in a thread and add it as a (hidden) layer when ready."""
        from .demo import demo_ground_truth_path, load_ground_truth

        path = demo_ground_truth_path()
        token = self._gt_token

        def work() -> None:
            lower_thread_priority()
            try:
                self._gt_mail.post((token, load_ground_truth(path), None))
            except Exception as exc:  # noqa: BLE001
                self._gt_mail.post((token, None, str(exc)))

        threading.Thread(target=work, name="ground-truth", daemon=True).start()

    def _ground_truth_loaded(self) -> None:
        for token, objects, error in self._gt_mail.take():
            if token != self._gt_token:
                continue  # the slide changed meanwhile
            if objects is None:
                self.statusBar().showMessage(f"Ground truth not loaded: {error}", 8000)
                continue
            self.view.add_layer(VectorLayer(objects, "Ground truth cells (synthetic)", visible=False))

    # ------------------------------------------------------------------------------------------ drag & drop
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        files = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.open_path(Path(files[0]))

    # ------------------------------------------------------------------------------------------------ misc
    def _about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"{APP_NAME} {__version__}\nAI-assisted cervical cytology review.")

    def closeEvent(self, event) -> None:  # noqa: N802
        if self.demo_job is not None and self.demo_job.running():
            # Cancelling takes effect at the next tile; while the layout is still being planned (seconds on a big
            # slide) no file exists yet, so the thread may be left to die with the process.
            self.demo_job.cancel()
            self.demo_job.wait(3.0)
        self._demo_done()
        self.analysis.shutdown()
        self.close_slide()
        super().closeEvent(event)
