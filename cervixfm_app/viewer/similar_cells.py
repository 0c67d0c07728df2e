"""Click-to-retrieve similar cells: pick a cell on the slide, see the cells that look most like it.

With the "Find Similar Cells" tool (S) a click on a cell, or a box dragged around it, queries the point: a crop of
the bundle's tile size at its target MPP centred there (on the nucleus of the cell under the cursor when there is
one, as the cell stage cut its crops), embedded by the bundle's backbone, searched among this slide's cells and in
every reference atlas the user added (``core.retrieval.similar``). The dock shows the query crop, each atlas's
k-NN label vote, and a gallery of the hits with distance and label; clicking a hit shows it on its slide (opening
that slide when it is another one).

The model is loaded once per bundle, and the slide's key set built once per cell table, both on the one
similar-cell worker thread, so a query never waits on the GUI and the GUI never waits on a query. A newer query
replaces one still waiting.
"""

from __future__ import annotations

import html
import logging
from functools import partial
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QAction, QColor, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget)

from core.errors import CervixFMError
from core.retrieval.similar import SLIDE_SOURCE, Hit, SimilarCellSearch, SimilarResult

from .cell_focus import focus_of
from .gallery import Gallery, GalleryItem, ImageFile, SlideRegion
from .tile_source import rgb_to_qimage
from .tools import ViewTool
from .workers import JobQueue, Mailbox

log = logging.getLogger(__name__)

ATLAS_SETTING = "similarCells/atlases"
#: A click within this distance of a cell's nucleus centre queries that nucleus (where the cell's crop is centred).
SNAP_UM = 12.0
#: A press that moves less than this many screen pixels is a click, not a box.
DRAG_PX = 4
QUERY_THUMB_PX = 112

_SEARCH_QUEUE: JobQueue | None = None


def search_queue() -> JobQueue:
    """The one thread that owns the model and the key sets (a ``SimilarCellSearch`` is not thread-safe)."""
    global _SEARCH_QUEUE
    if _SEARCH_QUEUE is None:
        _SEARCH_QUEUE = JobQueue(1, "similar-cells")
    return _SEARCH_QUEUE


class FindSimilarTool(ViewTool):
    """Click a cell, or drag a box around it: the panel searches for cells like it."""

    name = "Find Similar Cells"
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self, panel: "SimilarCellsPanel") -> None:
        super().__init__()
        self.panel = panel
        self._start: QPointF | None = None
        self._end: QPointF | None = None

    def deactivate(self) -> None:
        self._start = self._end = None
        super().deactivate()
        self.panel.tool_deactivated()

    def press(self, point: QPointF, event) -> bool:
        self._start = self._end = QPointF(point)
        return True

    def move(self, point: QPointF, event) -> bool:
        if self._start is None:
            return False
        self._end = QPointF(point)
        self.update()
        return True

    def release(self, point: QPointF, event) -> bool:
        if self._start is None:
            return False
        start, self._start, self._end = self._start, None, None
        moved = (self.to_screen(point) - self.to_screen(start)).manhattanLength()
        if moved < DRAG_PX:
            self.panel.query_at(point.x(), point.y())
        else:
            self.panel.query_at((start.x() + point.x()) / 2, (start.y() + point.y()) / 2,
                                snap_within=max(abs(point.x() - start.x()), abs(point.y() - start.y())) / 2)
        self.update()
        return True

    def key(self, event) -> bool:
        if event.key() == Qt.Key.Key_Escape and self.view is not None:
            self.view.set_tool(None)
            return True
        return False

    def paint(self, painter: QPainter, level0_rect: QRectF, scale: float) -> None:
        ox, oy = level0_rect.left(), level0_rect.top()
        if self._start is not None and self._end is not None:
            r = QRectF(QPointF((self._start.x() - ox) * scale, (self._start.y() - oy) * scale),
                       QPointF((self._end.x() - ox) * scale, (self._end.y() - oy) * scale)).normalized()
            painter.setPen(QPen(QColor(255, 220, 0), 1.5, Qt.PenStyle.DashLine))
            painter.setBrush(QColor(255, 220, 0, 30))
            painter.drawRect(r)
        box = self.panel.query_box
        if box is not None:
            x, y, w, h = box
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor(255, 220, 0), 2))
            painter.drawRect(QRectF((x - ox) * scale, (y - oy) * scale, w * scale, h * scale))


class SimilarCellsPanel(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.session = None
        self.search = SimilarCellSearch()
        self.result: SimilarResult | None = None
        #: Level-0 box of the crop being (or last) searched, drawn by the tool.
        self.query_box: tuple[float, float, float, float] | None = None
        self.atlases: list[str] = self._remembered_atlases()
        self._token = 0
        self._query_owner, self._atlas_owner, self._model_owner = object(), object(), object()
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._delivered)
        self.tool = FindSimilarTool(self)
        self._build()
        window.sessionChanged.connect(self._session_changed)
        changed = getattr(getattr(window, "analysis", None), "bundleChanged", None)
        if changed is not None:
            changed.connect(self._bundle_changed)
        self._update_atlas_label()

    # --------------------------------------------------------------------------------------------- widgets
    def _build(self) -> None:
        w = self.window
        self.tool_action = QAction("Find &Similar Cells", w, checkable=True, shortcut="S",
                                   toggled=self._toggle_tool)
        self.tool_action.setStatusTip("Click a cell (or drag a box around it) to find the cells that look most "
                                      "like it, on this slide and in the reference atlases")
        self.add_atlas_action = QAction("Add Reference &Atlas…", w, triggered=self.choose_atlas)
        self.add_atlas_action.setStatusTip("Add a labelled reference atlas (cervixfm atlas build) to search and "
                                           "vote on the label of each query")
        self.forget_atlases_action = QAction("Forget Reference Atlases", w, triggered=self.forget_atlases)
        menu = tools_menu(w)
        menu.addAction(self.tool_action)
        menu.addAction(self.add_atlas_action)
        menu.addAction(self.forget_atlases_action)

        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        buttons = QHBoxLayout()
        for action in (self.tool_action, self.add_atlas_action):
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        top = QHBoxLayout()
        self.query_image = QLabel()
        self.query_image.setFixedSize(QUERY_THUMB_PX, QUERY_THUMB_PX)
        self.query_image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.query_image.setStyleSheet("background: #2b2e34; border: 2px solid #e8c400;")
        self.query_text = QLabel()
        self.query_text.setWordWrap(True)
        self.query_text.setTextFormat(Qt.TextFormat.RichText)
        self.query_text.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.query_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top.addWidget(self.query_image)
        top.addWidget(self.query_text, 1)
        layout.addLayout(top)
        self.atlas_label = QLabel()
        self.atlas_label.setWordWrap(True)
        self.atlas_label.setStyleSheet("color: #8a8f99;")
        layout.addWidget(self.atlas_label)
        self.gallery = Gallery()
        self.gallery.itemActivated.connect(self.open_hit)
        self.gallery.set_empty_text("Press S (Find Similar Cells), then click a cell on the slide.")
        layout.addWidget(self.gallery, 1)
        self.dock = QDockWidget("Similar Cells", w)
        self.dock.setObjectName("similarCellsDock")
        self.dock.setWidget(box)
        self.dock.setMinimumWidth(260)
        w.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        # one tab group on the right (a second group leaves a stray tab bar behind in Qt 6.11)
        w.tabifyDockWidget(w.layers_dock, self.dock)
        w.layers_dock.raise_()
        toggle = self.dock.toggleViewAction()
        toggle.setText("Si&milar Cells")
        toggle.setStatusTip("Show or hide the similar-cell search")
        w.view_menu.addAction(toggle)
        self._set_query_text("")

    def _set_query_text(self, text: str) -> None:
        self.query_text.setText(html.escape(text or "No query yet."))

    def _update_atlas_label(self) -> None:
        if self.atlases:
            names = ", ".join(Path(a).name for a in self.atlases)
            self.atlas_label.setText(f"Reference atlases: {names}")
        else:
            self.atlas_label.setText("No reference atlas: Tools › Add Reference Atlas… to get label votes.")
        self.forget_atlases_action.setEnabled(bool(self.atlases))

    # ------------------------------------------------------------------------------------------------ tool
    def _toggle_tool(self, on: bool) -> None:
        view = self.window.view
        if on:
            if view.source is None:
                self.tool_action.setChecked(False)
                self.window.statusBar().showMessage("Open a slide first.", 4000)
                return
            view.set_tool(self.tool)
            self.dock.show()
            self.dock.raise_()
            self._warm_up()
        elif view.tool is self.tool:
            view.set_tool(None)

    def tool_deactivated(self) -> None:
        """Another tool (or navigation) took over the view."""
        if self.tool_action.isChecked():
            self.tool_action.blockSignals(True)
            self.tool_action.setChecked(False)
            self.tool_action.blockSignals(False)

    # --------------------------------------------------------------------------------------------- session
    def _session_changed(self, session) -> None:
        """A new slide: the hits shown stay (they say which slide they are on); the query marker goes."""
        self.session = session
        self.query_box = None
        self.gallery.release_slides()

    def _bundle_changed(self, *args) -> None:
        search = self.search
        search_queue().submit(self._model_owner, [(0.0, "forget", search.forget_model)])

    def bundle_folder(self) -> Path | None:
        """The analysis panel's bundle, else the installed demo bundle."""
        getter = getattr(getattr(self.window, "analysis", None), "bundle_folder", None)
        folder = getter() if callable(getter) else None
        folder = folder or getattr(self.window, "demo_bundle", None)
        return Path(folder) if folder else None

    def _warm_up(self) -> None:
        """Load the model and build the slide's key set while the user aims (the first click is then fast)."""
        bundle, session = self.bundle_folder(), self.session
        if bundle is None:
            return
        cells = session.cells if session is not None else None
        result = session.result if session is not None else None
        search = self.search

        def work() -> None:
            try:
                search.load_model(bundle)
                if cells is not None and len(cells):
                    search.slide_keys(cells, result)
            except CervixFMError:
                pass  # the query says what is wrong

        search_queue().submit(self._model_owner, [(1.0, "warm", work)])

    # ------------------------------------------------------------------------------------------------ query
    def missing_for_query(self) -> str | None:
        """What stops a query, in words, or None."""
        if self.session is None or self.window.view.source is None:
            return "Open a slide first."
        if self.bundle_folder() is None:
            return ("No model bundle to embed the query: choose a bundle in the Analysis panel (or install the "
                    "demo bundle).")
        if (self.session.cells is None or not len(self.session.cells)) and not self.atlases:
            return ("Nothing to search: this slide has no analysed cells yet (run the cell analysis) and no "
                    "reference atlas is added (Tools › Add Reference Atlas…).")
        return None

    def snap(self, x: float, y: float, within: float | None = None) -> tuple[float, float, int | None]:
        """(nucleus centre, cell row) of the analysed cell nearest (x, y) when its nucleus is within ``SNAP_UM``
        (or ``within`` level-0 px, for a box), else (x, y, None)."""
        cells = self.session.cells if self.session is not None else None
        if cells is None or not len(cells):
            return x, y, None
        radius = SNAP_UM / self.session.slide.mpp[0]
        if within is not None:
            radius = max(radius, within)
        d2 = ((cells.centres - (x, y)) ** 2).sum(axis=1)
        i = int(np.argmin(d2))
        if d2[i] > radius ** 2:
            return x, y, None
        return float(cells.centres[i, 0]), float(cells.centres[i, 1]), i

    def query_at(self, x: float, y: float, snap_within: float | None = None) -> bool:
        """Search for cells like the one at level-0 (x, y); False (with the reason shown) when it cannot."""
        problem = self.missing_for_query()
        if problem is not None:
            self._show_problem(problem)
            return False
        session = self.session
        x, y, cell = self.snap(x, y, snap_within)
        self._token += 1
        token = self._token
        cells = session.cells if session.cells is not None and len(session.cells) else None
        slide_path = str(session.slide_path)
        run = partial(self.search.query, slide_path, x, y, self.bundle_folder(), slide_mpp=tuple(session.slide.mpp),
                      cells=cells, result=session.result, atlases=list(self.atlases),
                      cell=cell if cells is not None else None)
        half = 112 / session.slide.mpp[0]  # until the model says its crop, mark a 224 px crop at 0.5 µm/px
        self.query_box = (x - half, y - half, 2 * half, 2 * half)
        self.window.view.update()
        self._set_query_text(f"Searching for cells like the one at ({x:,.0f}, {y:,.0f}) px…")
        self.dock.show()
        self.dock.raise_()

        def work() -> None:
            try:
                result = run()
            except CervixFMError as exc:
                self._mail.post(("failed", token, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a bug reaches the user as a message; the app stays up
                log.exception("similar-cell query")
                self._mail.post(("failed", token, f"The search stopped with an internal error: {exc}"))
            else:
                self._mail.post(("result", token, (slide_path, x, y, result)))

        search_queue().submit(self._query_owner, [(0.0, ("query", token), work)])
        return True

    def _show_problem(self, text: str) -> None:
        self._set_query_text(text)
        self.window.statusBar().showMessage(text, 8000)
        self.dock.show()
        self.dock.raise_()

    def _delivered(self) -> None:
        for kind, token, payload in self._mail.take():
            if kind == "atlas-added":
                self._atlas_added(*payload)
            elif kind == "atlas-failed":
                self.window.show_error("Cannot add reference atlas", payload)
            elif token != self._token:
                continue  # a newer query replaced this one
            elif kind == "failed":
                self.query_box = None
                self.window.view.update()
                self._show_problem(payload)
            else:
                self._show_result(*payload)

    def _show_result(self, slide_path: str, x: float, y: float, result: SimilarResult) -> None:
        self.result = result
        current = self._current_slide()
        self.query_box = result.box if current is not None and _same_file(Path(slide_path), current) else None
        self.window.view.update()
        image = rgb_to_qimage(result.query)
        self.query_image.setPixmap(QPixmap.fromImage(image).scaled(
            QUERY_THUMB_PX - 4, QUERY_THUMB_PX - 4, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation))
        lines = [f"Query at ({x:,.0f}, {y:,.0f}) px: {result.size} px at "
                 f"{result.mpp:g} µm/px"]
        for hl in result.lists:
            if hl.error:
                lines.append(f"⚠ {hl.error}")
            elif hl.suggestion is not None:
                label, confidence, votes = hl.suggestion
                n = sum(votes.values())
                lines.append(f"{hl.source}: suggests <b>{label}</b> ({round(confidence * n)} of {n} votes)")
            elif hl.source == SLIDE_SOURCE:
                lines.append(f"{hl.source}: {len(hl.hits)} nearest cells")
        if not any(hl.source == SLIDE_SOURCE for hl in result.lists):
            lines.append("This slide has no analysed cells, so only the atlases were searched (run the cell "
                         "analysis to search the slide too).")
        self.query_text.setText("<br>".join(_escape_keep_bold(line) for line in lines))
        items = [self._item(hit) for hit in result.hits]
        self.gallery.set_items(items, current_row=0 if items else None)
        if not items:
            self.gallery.set_empty_text("No hits: see the messages above.")
        self.window.statusBar().showMessage(f"{len(items)} similar cells found.", 4000)

    def _item(self, hit: Hit) -> GalleryItem:
        if hit.slide and hit.box:
            picture = SlideRegion(hit.slide, *hit.box)
        elif hit.image:
            picture = ImageFile(hit.image)
        else:
            picture = None
        where = "this slide" if hit.source == SLIDE_SOURCE else f"atlas {hit.source}"
        subtitle = hit.label or ""
        if hit.source != SLIDE_SOURCE:
            subtitle = f"{subtitle} · {hit.source}" if subtitle else hit.source
        tip = [f"#{hit.rank} in {where}", f"distance {hit.distance:.4f} (cosine {1 - hit.distance / 2:.3f})"]
        if hit.label:
            tip.append(f"label {hit.label}")
        if hit.score is not None:
            tip.append(f"score {hit.score:.3f}")
        if hit.slide:
            tip.append(f"{Path(hit.slide).name} at ({hit.centre[0]:,.0f}, {hit.centre[1]:,.0f}) px"
                       if hit.box else Path(hit.slide).name)
        elif hit.image:
            tip.append(Path(hit.image).name)
        return GalleryItem((hit.source, hit.rank), picture, f"#{hit.rank}  d {hit.distance:.3f}", subtitle, None,
                           "\n".join(tip), hit, mark_centre=isinstance(picture, SlideRegion))

    def _current_slide(self) -> Path | None:
        path = self.window.slide_path
        return Path(path) if path is not None else None

    # ------------------------------------------------------------------------------------------------- hits
    def open_hit(self, item: GalleryItem | None) -> bool:
        """Show the hit on its slide: the current one, or the hit's slide opened first."""
        hit: Hit | None = item.data if item is not None else None
        if hit is None:
            return False
        if not hit.slide or hit.box is None:
            self.window.statusBar().showMessage(
                f"Atlas image {Path(hit.image).name if hit.image else ''} ({hit.label or 'no label'}): it is not "
                "on a slide.", 6000)
            return False
        current = self._current_slide()
        if current is None or not _same_file(current, Path(hit.slide)):
            if not self.window.open_path(Path(hit.slide)):
                return False
        cx, cy = hit.centre
        outline = None
        session = self.session
        if hit.source == SLIDE_SOURCE and hit.cell is not None and session is not None and session.cells is not None \
                and hit.cell < len(session.cells) and np.allclose(session.cells.crop_boxes[hit.cell], hit.box):
            outline = session.cells.cell_ring(hit.cell)
            cx, cy = session.cells.centres[hit.cell]
        return focus_of(self.window).show(cx, cy, outline=outline, box=hit.box)

    # ----------------------------------------------------------------------------------------------- atlases
    def _remembered_atlases(self) -> list[str]:
        value = self.window.settings.value(ATLAS_SETTING, [])
        if not value:
            return []
        return [str(v) for v in ([value] if isinstance(value, str) else value)]

    def choose_atlas(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Add reference atlas (an atlas folder)")
        if folder:
            self.add_atlas(folder)

    def add_atlas(self, folder: str | Path) -> None:
        """Open (and check) the atlas on the worker; it is added and remembered when it opens, else a message
        says why."""
        path = str(Path(folder).resolve())
        search = self.search

        def work() -> None:
            try:
                search.forget_atlas(path)
                atlas = search.open_atlas(path)
                self._mail.post(("atlas-added", 0, (path, len(atlas), atlas.classes or sorted(atlas.label_counts()))))
            except CervixFMError as exc:
                self._mail.post(("atlas-failed", 0, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a damaged folder can raise anything; the app stays up
                log.exception("opening atlas %s", path)
                self._mail.post(("atlas-failed", 0, f"{path} could not be read as an atlas ({exc})."))

        search_queue().submit(self._atlas_owner, [(0.5, ("atlas", path), work)])

    def _atlas_added(self, path: str, count: int, classes) -> None:
        if path not in self.atlases:
            self.atlases.append(path)
        self.window.settings.setValue(ATLAS_SETTING, list(self.atlases))
        self.window.settings.sync()
        self._update_atlas_label()
        shown = ", ".join(list(classes)[:8]) + ("…" if len(classes) > 8 else "")
        self.window.statusBar().showMessage(f"Reference atlas {Path(path).name} added: {count:,} labelled cells "
                                            f"({shown}).", 8000)

    def forget_atlases(self) -> None:
        self.atlases = []
        self.window.settings.setValue(ATLAS_SETTING, [])
        self.window.settings.sync()
        self._update_atlas_label()


def tools_menu(window):
    """The window's Tools menu, made before Help when no panel has made it yet."""
    for action in window.menuBar().actions():
        menu = action.menu()
        if menu is not None and action.text().replace("&", "") == "Tools":
            return menu
    return window.menuBar().addMenu("&Tools")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def _escape_keep_bold(text: str) -> str:
    return html.escape(text).replace("&lt;b&gt;", "<b>").replace("&lt;/b&gt;", "</b>")
