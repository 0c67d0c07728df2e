"""The "Slide Score" dock: what the model says about the whole slide, and how its tile and cell findings are spread.

A pathologist reads the slide score first and judges it by what stands behind it, so the panel puts side by side
the slide heads' class probabilities (with the model and whether the run covered the whole slide: a partial run
has no slide score, because ABMIL over a region would be a different question), the distribution of tile scores
(one bright tile and a hundred bright tiles are different slides with the same maximum), and the cells per class.
The histogram follows a running analysis but redraws at most four times a second, whatever the tile rate.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from core.overlays import ObjectSet, TileScores

from .analysis_run import class_counts
from .style import scrolling_panel

#: The histogram and cell counts redraw at most this often (4 Hz) while an analysis feeds them.
REFRESH_MS = 250
HISTOGRAM_BINS = 20

DECISION_SUPPORT_NOTE = ("Decision support only: these scores come from a model and are not a diagnosis. Review the "
                         "slide and the highlighted regions and cells before reporting.")

_STYLE = """
QWidget#scorePanel { background: #23262b; }
QLabel { color: #d7dae0; }
QLabel[role="muted"] { color: #9aa0aa; }
QLabel[role="section"] { color: #b9bec7; font-weight: 600; padding-top: 6px; }
QLabel[role="label"] { font-size: 15px; font-weight: 700; color: #e6e8ec; }
QLabel[role="note"] { color: #9aa0aa; font-style: italic; padding-top: 6px; }
QFrame#headBox { background: #2b2e34; border: 1px solid #363a41; border-radius: 4px; }
QProgressBar { background: #1c1e22; border: 1px solid #3a3f47; border-radius: 3px; color: #e6e8ec;
               text-align: center; max-height: 14px; }
QProgressBar::chunk { background: #3d6eaa; border-radius: 2px; }
"""


def _label(text: str = "", role: str | None = None, wrap: bool = True) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(wrap)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if role:
        label.setProperty("role", role)
    return label


class ScorePanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("scorePanel")
        self.setStyleSheet(_STYLE)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        inner = QWidget()
        inner.setObjectName("scorePanel")
        box = QVBoxLayout(inner)
        box.setContentsMargins(10, 8, 10, 8)
        box.setSpacing(4)
        scrolling_panel(self, inner)

        self.model_label = _label("No analysis yet.", "section")
        self.status_label = _label("Choose Analysis › Analyse Slide to score this slide.", "muted")
        box.addWidget(self.model_label)
        box.addWidget(self.status_label)

        box.addWidget(_label("Slide score", "section"))
        self._heads_box = QVBoxLayout()
        self._heads_box.setSpacing(6)
        box.addLayout(self._heads_box)
        self.slide_note = _label("", "muted")
        box.addWidget(self.slide_note)

        box.addWidget(_label("Tile scores", "section"))
        self.plot = pg.PlotWidget(background="#1c1e22")
        self.plot.setFixedHeight(170)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setXRange(0.0, 1.0, padding=0.02)
        for side in ("left", "bottom"):
            axis = self.plot.getAxis(side)
            axis.setPen(pg.mkPen("#5a5f68"))
            axis.setTextPen(pg.mkPen("#9aa0aa"))
        self.plot.setLabel("bottom", "P(abnormal)", color="#9aa0aa")
        self.plot.setLabel("left", "tiles", color="#9aa0aa")
        edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
        self._centres = (edges[:-1] + edges[1:]) / 2
        self.histogram_counts = np.zeros(HISTOGRAM_BINS, np.int64)
        self._bars = pg.BarGraphItem(x=self._centres, height=self.histogram_counts, width=0.9 / HISTOGRAM_BINS,
                                     brush=pg.mkBrush(214, 120, 60, 220), pen=pg.mkPen(None))
        self.plot.addItem(self._bars)
        box.addWidget(self.plot)
        self.histogram_caption = _label("", "muted")
        box.addWidget(self.histogram_caption)

        self.cells_title = _label("Cells", "section")
        self.cells_label = _label("", wrap=True)
        self.cells_label.setTextFormat(Qt.TextFormat.RichText)
        box.addWidget(self.cells_title)
        box.addWidget(self.cells_label)

        box.addWidget(_label(DECISION_SUPPORT_NOTE, "note"))
        box.addStretch(1)

        self._scores: TileScores | None = None
        self._scores_note = ""
        self._cells: ObjectSet | None = None
        self._cells_status = ""
        self._timer = QTimer(self, singleShot=True, interval=REFRESH_MS, timeout=self.refresh)
        self.refresh_count = 0
        self.clear()

    # ------------------------------------------------------------------------------------------- state
    def clear(self) -> None:
        """No slide, or a slide not analysed with this bundle."""
        self.model_label.setText("No analysis yet.")
        self.status_label.setText("Choose Analysis › Analyse Slide (or Analyse View) to score this slide.")
        self._set_heads({})
        self.slide_note.setText("")
        self._scores = None
        self._scores_note = ""
        self._cells = None
        self._cells_status = ""
        self._timer.stop()
        self.refresh()

    def show_model(self, name: str, status: str) -> None:
        self.model_label.setText(f"Model: {name}" if name else "Model: (unnamed bundle)")
        self.status_label.setText(status)

    def set_status(self, status: str) -> None:
        self.status_label.setText(status)

    def show_result(self, result) -> None:
        """A ``SlideResult``: its model, how much of the slide it covers and its slide scores."""
        self.show_model(str(result.model.get("name", "")), describe_status(result))
        self._set_heads(result.slide_scores)
        has_slide_head = any(h.get("role") == "slide" for h in result.heads.values())
        if result.slide_scores:
            self.slide_note.setText("")
        elif not has_slide_head:
            self.slide_note.setText("This bundle has no slide head: tile and cell findings only.")
        else:
            self.slide_note.setText("The slide score needs the whole slide: run Analysis › Analyse Slide.")

    def show_running(self) -> None:
        self._set_heads({})
        self.slide_note.setText("The slide score appears when every tile is analysed.")

    def set_tile_scores(self, scores: TileScores | None, note: str = "") -> None:
        """The heat map whose distribution is drawn; ``note`` says why there is none."""
        self._scores = scores
        self._scores_note = note
        self.refresh_soon()

    def set_cells(self, objects: ObjectSet | None, status: str = "") -> None:
        self._cells = objects
        self._cells_status = status
        self.refresh_soon()

    # ---------------------------------------------------------------------------------------- drawing
    def refresh_soon(self) -> None:
        """Something changed: redraw within ``REFRESH_MS`` (calls meanwhile are folded into that one redraw)."""
        if not self._timer.isActive():
            self._timer.start()

    def refresh(self) -> None:
        self.refresh_count += 1
        self._draw_histogram()
        self._draw_cells()

    def _draw_histogram(self) -> None:
        values = np.zeros(0, np.float32)
        if self._scores is not None:
            v = self._scores.values
            values = v[np.isfinite(v)]
        counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
        self.histogram_counts = counts
        self._bars.setOpts(height=counts)
        self.plot.setYRange(0, max(1, int(counts.max(initial=0))), padding=0.05)
        self.plot.setVisible(self._scores is not None)
        if self._scores is None:
            self.histogram_caption.setText(self._scores_note)
        elif not len(values):
            self.histogram_caption.setText(f"{self._scores.name}: no tiles analysed yet.")
        else:
            high = int((values >= 0.5).sum())
            self.histogram_caption.setText(
                f"{self._scores.name}: {len(values):,} of {len(self._scores):,} tiles, median "
                f"{float(np.median(values)):.2f}, {high:,} at 0.5 or above.")

    def _draw_cells(self) -> None:
        visible = self._cells is not None
        self.cells_title.setVisible(visible)
        self.cells_label.setVisible(visible)
        if not visible:
            self.cells_label.setText("")
            return
        counts = class_counts(self._cells)
        snap = self._cells.snapshot()
        colors = snap.colors.reshape(-1, 3)
        rows = "".join(
            f"<tr><td><span style='color: rgb({c[0]},{c[1]},{c[2]});'>■</span> {name}</td>"
            f"<td align='right'>&nbsp;&nbsp;{n:,}</td></tr>"
            for (name, n), c in zip(counts.items(), colors))
        total = len(snap)
        status = f" ({self._cells_status})" if self._cells_status else ""
        self.cells_label.setText(f"<b>{total:,}</b> cells{status}<table>{rows}</table>")

    def _set_heads(self, scores: dict) -> None:
        while self._heads_box.count():
            w = self._heads_box.takeAt(0).widget()
            if w is not None:
                w.hide()
                w.setParent(None)
                w.deleteLater()
        for name, score in scores.items():
            self._heads_box.addWidget(_HeadScore(name, score))

    def head_texts(self) -> list[str]:
        """The slide heads as shown (``name: label``), for tests and accessibility."""
        out = []
        for i in range(self._heads_box.count()):
            w = self._heads_box.itemAt(i).widget()
            if isinstance(w, _HeadScore):
                out.append(w.summary)
        return out


class _HeadScore(QFrame):
    """One slide head: its predicted label and a bar per class probability."""

    def __init__(self, name: str, score: dict, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("headBox")
        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 6)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(3)
        label = str(score.get("label", ""))
        self.summary = f"{name}: {label}"
        grid.addWidget(_label(name, "muted"), 0, 0, 1, 2)
        grid.addWidget(_label(label, "label"), 1, 0, 1, 2)
        for row, (cls, p) in enumerate(zip(score.get("classes", []), score.get("probs", [])), start=2):
            grid.addWidget(_label(str(cls), wrap=False), row, 0)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(int(round(float(p) * 1000)))
            bar.setFormat(f"{100 * float(p):.1f} %")
            bar.setToolTip(f"P({cls}) = {float(p):.4f}")
            grid.addWidget(bar, row, 1)
        grid.setColumnStretch(1, 1)


def describe_status(result) -> str:
    """How much of the slide a result covers, in the words the panel and the status bar use."""
    s = result.summary or {}
    analysed, total = s.get("tiles_analysed", len(result.tiles)), s.get("tiles_cell_area")
    of = f"{analysed:,} of {total:,} tiles" if total is not None else f"{analysed:,} tiles"
    if result.status == "complete":
        text = f"Complete: {of}."
    elif result.status == "partial":
        text = f"Partial (view only): {of}. Analyse Slide continues from here."
    else:
        text = f"Stopped before the end: {of}. Analyse Slide continues from here."
    cells = result.cells or {}
    if cells.get("status") and cells["status"] != "complete":
        text += f" Cell search {'partial (view only)' if cells['status'] == 'partial' else 'stopped early'}."
    return text
