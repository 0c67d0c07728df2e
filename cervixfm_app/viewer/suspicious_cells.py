"""The suspicious-cell gallery: the slide's cells a reviewer should look at first, and their decisions.

When the open slide's cells arrive (``SlideSession.cellsChanged``) the dock lists them best first: every cell by
abnormality, or the cells of one class by that class's probability (abnormal classes first in the selector). The
reviewer works from the keyboard: arrows move, Enter (or a click) shows the cell on the slide at 40x, A accepts,
X rejects, C reclassifies (a menu of the classes, digits choose). Each decision is one undoable edit of the
session's annotation store: a ``review`` annotation aimed at the cell's id (``core.annotations.review_decision``,
the form the core intends for model detections, which re-analysis regenerates), so it is autosaved to the slide's
sidecar and comes back with the slide. Badges show each cell's decision; reviewed cells can be hidden.

Ranking, cell ids and the decision index are computed on a worker thread (a slide can hold 100,000 cells); the
GUI thread only filters arrays and paints the visible thumbnails.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PySide6.QtCore import QObject, QPoint, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QHBoxLayout, QLabel, QMenu, QVBoxLayout,
                               QWidget)

from core.annotations import review_decision
from core.annotations.classes import BETHESDA
from core.errors import CervixFMError
from core.cells.review import (ABNORMALITY, Ranking, ReviewLedger, cell_annotation, classifier_of, predicted_labels,
                               review_rankings)

from .cell_focus import focus_of
from .gallery import Gallery, GalleryItem, SlideRegion
from .workers import Mailbox, lower_thread_priority

log = logging.getLogger(__name__)

DECISION_LABELS = {"accepted": "Accept cell", "rejected": "Reject cell", "reclassified": "Reclassify cell"}
NO_SLIDE_TEXT = "Open a slide and run its cell analysis to review suspicious cells."
NO_CELLS_TEXT = ("This slide has no analysed cells yet.\nRun the cell analysis (Analysis panel) and the most "
                 "suspicious cells will be listed here.")


@dataclasses.dataclass
class CellReview:
    """Everything the gallery needs about one cell table, computed off the GUI thread."""

    table: object  # core.cells.CellTable
    slide_path: str
    ids: list[str]
    index_of: dict[str, int]
    rankings: list[Ranking]
    labels: list[str] | None  # predicted class per cell
    classes: list[str]  # the classes a cell can be reclassified to
    source: str  # "model:<name>" of the cells a decision refers to
    ledger: ReviewLedger
    head: str | None  # the cell-classifier head the scores come from; None for localised-only cells
    key: tuple = ()  # what the ranking depends on besides the table (``review_key``)
    note: str = ""  # what the reviewer should know (no classifier...)


def review_key(table, result, slide_path: str) -> tuple:
    """Everything of a result the gallery uses: a new result with the same key needs no re-ranking."""
    head, classes, normal = classifier_of(table, result)
    slide = (result.slide or {}).get("path") if result is not None else None
    model = (result.model or {}).get("name") if result is not None else None
    return head, tuple(classes or ()), tuple(normal or ()), str(slide or slide_path), model


def prepare_review(table, result, slide_path: str, annotations) -> CellReview:
    """Rankings, ids and decisions of ``table`` (worker thread)."""
    from core.cells.export import cell_ids

    head, classes, normal = classifier_of(table, result)
    rankings = review_rankings(table, head, classes, normal)
    labels = predicted_labels(table, head, classes)
    if head is not None and not classes:
        classes = [f"class {c}" for c in range(table.heads[head]["probs"].shape[1])]
    note = "" if head is not None else ("These cells have no classifier scores (the bundle has no cell-classifier "
                                        "head): they are listed by detection score.")
    slide_name = Path(str((result.slide or {}).get("path") or slide_path)).stem if result is not None else \
        Path(slide_path).stem
    ids = cell_ids(table, slide_name)
    model_name = ((result.model or {}).get("name") if result is not None else None) or "cells"
    return CellReview(table, str(slide_path), ids, {c: i for i, c in enumerate(ids)}, rankings, labels,
                      classes or [name for name, _ in BETHESDA], f"model:{model_name}", ReviewLedger(annotations),
                      head, review_key(table, result, slide_path), note)


class _RankedItems(Sequence):
    """Gallery items of one ranking, made when the grid asks for them (the list can hold every cell)."""

    def __init__(self, panel: "SuspiciousCellsPanel", ranking: Ranking, rows: np.ndarray) -> None:
        self.panel = panel
        self.ranking = ranking
        self.rows = rows  # positions in the ranking that are shown

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, row: int) -> GalleryItem:
        if not 0 <= row < len(self.rows):
            raise IndexError(row)
        pos = int(self.rows[row])
        return self.panel.make_item(int(self.ranking.indices[pos]), float(self.ranking.scores[pos]),
                                    self.ranking.name)


class SuspiciousCellsPanel(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.session = None
        self.review: CellReview | None = None
        self.reviewed = np.zeros(0, bool)
        self._token = 0
        self._events_while_preparing: list = []
        self._preparing = False
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._prepared)
        self._build()
        window.sessionChanged.connect(self._session_changed)
        self._show_empty(NO_SLIDE_TEXT)

    # --------------------------------------------------------------------------------------------- widgets
    def _build(self) -> None:
        w = self.window
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        row = QHBoxLayout()
        self.class_box = QComboBox()
        self.class_box.setToolTip("Which cells to list: all cells by abnormality, or the cells predicted as one "
                                  "class by that class's probability (abnormal classes first)")
        self.class_box.currentIndexChanged.connect(lambda _: self._show_ranking())
        self.hide_reviewed = QCheckBox("Hide reviewed")
        self.hide_reviewed.setToolTip("Leave out cells that already have a decision")
        self.hide_reviewed.toggled.connect(lambda _: self._show_ranking(keep_row=True))
        row.addWidget(self.class_box, 1)
        row.addWidget(self.hide_reviewed)
        layout.addLayout(row)
        self.count_label = QLabel("")
        self.count_label.setStyleSheet("color: #b9bec7;")
        layout.addWidget(self.count_label)
        self.gallery = Gallery()
        self.gallery.key_handler = self._key
        self.gallery.itemActivated.connect(self.go_to)
        self.gallery.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.gallery.customContextMenuRequested.connect(self._context_menu)
        layout.addWidget(self.gallery, 1)
        hint = QLabel("Enter: show on slide · A accept · X reject · C reclassify")
        hint.setStyleSheet("color: #8a8f99;")
        layout.addWidget(hint)
        self.dock = QDockWidget("Suspicious Cells", w)
        self.dock.setObjectName("suspiciousCellsDock")
        self.dock.setWidget(box)
        self.dock.setMinimumWidth(260)
        w.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        w.tabifyDockWidget(w.layers_dock, self.dock)  # a tab beside the layers: the gallery gets the full height
        w.layers_dock.raise_()
        self.toggle_action = self.dock.toggleViewAction()
        self.toggle_action.setText("Suspicious &Cells")
        self.toggle_action.setStatusTip("Show or hide the gallery of the slide's most suspicious cells")
        w.view_menu.addAction(self.toggle_action)

    def _show_empty(self, text: str) -> None:
        self.class_box.blockSignals(True)
        self.class_box.clear()
        self.class_box.blockSignals(False)
        self.class_box.setEnabled(False)
        self.count_label.setText("")
        self.gallery.set_items([])
        self.gallery.set_empty_text(text)

    # --------------------------------------------------------------------------------------------- session
    def _session_changed(self, session) -> None:
        if self.session is not None:
            for signal, slot in ((self.session.cellsChanged, self._cells_changed),
                                 (self.session.resultChanged, self._result_changed),
                                 (self.session.annotationsChanged, self._annotations_changed)):
                try:
                    signal.disconnect(slot)
                except (RuntimeError, TypeError):
                    pass
        self.session = session
        self.review = None
        self._token += 1
        self.gallery.release_slides()
        if session is None:
            self._show_empty(NO_SLIDE_TEXT)
            return
        session.cellsChanged.connect(self._cells_changed)
        session.resultChanged.connect(self._result_changed)
        session.annotationsChanged.connect(self._annotations_changed)
        self._cells_changed(session.cells)

    def _result_changed(self, result) -> None:
        """Class names and normal classes live in the result: re-rank only when they (or the model) changed."""
        session = self.session
        if session is None or session.cells is None:
            return
        review = self.review
        if review is not None and review.table is session.cells and not self._preparing and \
                review.key == review_key(session.cells, result, str(session.slide_path)):
            return
        self._cells_changed(session.cells)

    def _cells_changed(self, cells) -> None:
        self._token += 1
        self._preparing = False
        if cells is None or self.session is None:
            self.review = None
            self._show_empty(NO_CELLS_TEXT if self.session is not None else NO_SLIDE_TEXT)
            return
        if len(cells) == 0:
            self.review = None
            self._show_empty("The cell analysis found no cells on this slide.")
            return
        session, token = self.session, self._token
        self._events_while_preparing = []
        self._preparing = True
        self.gallery.set_empty_text("Ranking the cells…")
        result, store, path = session.result, session.store, str(session.slide_path)

        def work() -> None:
            lower_thread_priority()
            try:
                review = prepare_review(cells, result, path, store.snapshot())
            except Exception as exc:  # noqa: BLE001 - shown in the panel; the app stays up
                log.exception("preparing the cell gallery")
                self._mail.post((token, None, f"The cells could not be listed: {exc}"))
                return
            self._mail.post((token, review, None))

        threading.Thread(target=work, name="suspicious-cells", daemon=True).start()

    def _prepared(self) -> None:
        for token, review, error in self._mail.take():
            if token != self._token:
                continue  # the cells or the slide changed meanwhile
            if review is None:
                self._preparing = False
                self.review = None
                self._show_empty(error)
                continue
            for event in self._events_while_preparing:  # edits made while ranking (applying twice is harmless)
                review.ledger.apply(event)
            self._events_while_preparing = []
            self._preparing = False
            place = self._place()
            self.review = review
            self.reviewed = np.zeros(len(review.ids), bool)
            for target in review.ledger.targets():
                i = review.index_of.get(target)
                if i is not None:
                    self.reviewed[i] = True
            self.class_box.blockSignals(True)
            self.class_box.clear()
            for ranking in review.rankings:
                self.class_box.addItem(ranking.title, ranking.name)
            self.class_box.setCurrentIndex(max(0, self.class_box.findData(place[0])))
            self.class_box.blockSignals(False)
            self.class_box.setEnabled(len(review.rankings) > 1)
            self.gallery.set_empty_text(review.note or "No cells in this list.")
            if review.note:
                self.window.statusBar().showMessage(review.note, 10000)
            self._show_ranking()
            self._restore_place(place[1])
            if len(review.rankings):  # cells to review: open the gallery (hidden until there are any) in front
                self.dock.show()
                self.dock.raise_()

    def _place(self) -> tuple[str | None, str | None]:
        """(ranking name, id of the current cell) shown now, to come back to after the cells are re-ranked."""
        item = self.gallery.current_item()
        if self.review is None or item is None:
            return None, None
        return self.class_box.currentData(), self.review.ids[int(item.data)]

    def _restore_place(self, cell_id: str | None) -> None:
        cell = self.review.index_of.get(cell_id) if cell_id is not None else None
        items = self.gallery.items
        if cell is None or not isinstance(items, _RankedItems):
            return
        rows = np.flatnonzero(items.ranking.indices[items.rows] == cell)
        if len(rows):
            self.gallery.set_current_row(int(rows[0]))

    def _annotations_changed(self, event) -> None:
        if self._preparing:
            self._events_while_preparing.append(event)
        review = self.review
        if review is None:
            return
        touched = review.ledger.apply(event)
        changed = False
        for target in touched:
            i = review.index_of.get(target)
            if i is not None:
                self.reviewed[i] = review.ledger.decision(target) is not None
                changed = True
        if changed:
            if self.hide_reviewed.isChecked():
                self._show_ranking(keep_row=True)
            else:
                self.gallery.viewport().update()
                self._update_count()

    # --------------------------------------------------------------------------------------------- listing
    def current_ranking(self) -> Ranking | None:
        if self.review is None:
            return None
        name = self.class_box.currentData()
        return next((r for r in self.review.rankings if r.name == name), None)

    def select_ranking(self, name: str) -> bool:
        """Show the ranking ``name`` (ABNORMALITY or a class name)."""
        i = self.class_box.findData(name)
        if i < 0:
            return False
        self.class_box.setCurrentIndex(i)
        return True

    def _show_ranking(self, keep_row: bool = False) -> None:
        ranking = self.current_ranking()
        if ranking is None:
            return
        row = self.gallery.current_row() if keep_row else 0
        rows = np.arange(len(ranking))
        if self.hide_reviewed.isChecked():
            rows = rows[~self.reviewed[ranking.indices]]
        self.gallery.set_items(_RankedItems(self, ranking, rows), current_row=max(row, 0))
        self._update_count()

    def _update_count(self) -> None:
        ranking = self.current_ranking()
        if ranking is None:
            self.count_label.setText("")
            return
        done = int(self.reviewed[ranking.indices].sum())
        text = f"{done:,} of {len(ranking):,} reviewed"
        if self.hide_reviewed.isChecked():
            text += f" · {len(ranking) - done:,} left"
        self.count_label.setText(text)

    def make_item(self, cell: int, score: float, ranking: str) -> GalleryItem:
        review = self.review
        table = review.table
        x, y, w, h = (float(v) for v in table.crop_boxes[cell])
        label = review.labels[cell] if review.labels is not None else ""
        decision = review.ledger.decision(review.ids[cell])
        status = decision.review.status if decision is not None else None
        subtitle = label
        if status == "reclassified":
            subtitle = f"{label} → {decision.class_name}"
        what = "abnormality" if ranking == ABNORMALITY else ("detection score" if review.labels is None
                                                              else f"P({ranking})")
        cx, cy = table.centres[cell]
        tip = [f"{what} {score:.3f}"] + ([f"predicted {label}"] if label else [])
        tip.append(f"reclassified as {decision.class_name}" if status == "reclassified" else status or "not reviewed")
        tip.append(f"at ({cx:,.0f}, {cy:,.0f}) px")
        return GalleryItem(cell, SlideRegion(review.slide_path, x, y, w, h), f"{score:.3f}", subtitle, status,
                           "\n".join(tip), cell, mark_centre=True)

    # ------------------------------------------------------------------------------------------- navigation
    def go_to(self, item: GalleryItem | None) -> bool:
        """Centre the view on the item's cell at high magnification and outline it."""
        if item is None or self.review is None:
            return False
        table = self.review.table
        cell = int(item.data)
        cx, cy = table.centres[cell]
        return focus_of(self.window).show(cx, cy, outline=table.cell_ring(cell), box=tuple(table.crop_boxes[cell]))

    # -------------------------------------------------------------------------------------------- decisions
    def _key(self, event, item: GalleryItem | None) -> bool:
        if event.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier |
                                Qt.KeyboardModifier.MetaModifier):
            return False
        key = event.key()
        if key == Qt.Key.Key_A:
            self.decide("accepted", item=item)
            return True
        if key == Qt.Key.Key_X:
            self.decide("rejected", item=item)
            return True
        if key == Qt.Key.Key_C:
            self.open_reclassify_menu(item)
            return True
        return False

    def decide(self, status: str, new_class: str | None = None, item: GalleryItem | None = None) -> bool:
        """Record a decision about the item's cell (default: the current one) as one undo step, replacing an
        earlier decision about it, then move on to the next cell."""
        review, session = self.review, self.session
        item = item if item is not None else self.gallery.current_item()
        if review is None or session is None or item is None:
            return False
        cell = int(item.data)
        cell_id = review.ids[cell]
        label = review.labels[cell] if review.labels is not None else None
        if status == "reclassified" and new_class == label:
            status, new_class = "accepted", None  # "reclassified" as what the model said is agreeing with it
        previous = review.ledger.decisions_about(cell_id)
        current = review.ledger.decision(cell_id)
        if current is not None and current.review.status == status and len(previous) == 1 and \
                (status != "reclassified" or current.class_name == new_class):
            self.window.statusBar().showMessage(f"This cell is already {status}.", 3000)
            self._advance()
            return False
        ranking = self.current_ranking()
        score = float(review.table.heads[review.head]["abnormality"][cell]) if review.head else None
        target = cell_annotation(review.table, cell, cell_id, label, score, review.source)
        decision = review_decision(target, status, new_class)
        text = DECISION_LABELS[status]
        try:
            with session.store.transaction(text):
                if previous:
                    session.store.remove(previous, label=text)
                session.store.add(decision, label=text)
        except CervixFMError as exc:  # e.g. an earlier decision the user locked: nothing changed
            self.window.statusBar().showMessage(f"Decision not recorded: {exc}", 8000)
            return False
        # the store's event reaches the ledger through the session a moment later; apply it now so the badge and
        # the next key see it at once (applying the same event twice is harmless)
        review.ledger.apply(_event(removed=previous, added=[decision]))
        self.reviewed[cell] = True
        what = f"reclassified as {new_class}" if status == "reclassified" else status
        self.window.statusBar().showMessage(f"Cell {what} ({ranking.title if ranking else ''}).", 3000)
        if self.hide_reviewed.isChecked():
            self._show_ranking(keep_row=True)
        else:
            self._advance()
            self.gallery.viewport().update()
            self._update_count()
        return True

    def clear_decision(self, item: GalleryItem | None = None) -> bool:
        review, session = self.review, self.session
        item = item if item is not None else self.gallery.current_item()
        if review is None or session is None or item is None:
            return False
        previous = review.ledger.decisions_about(review.ids[int(item.data)])
        if not previous:
            return False
        try:
            session.store.remove(previous, label="Clear cell decision")
        except CervixFMError as exc:
            self.window.statusBar().showMessage(f"Decision not cleared: {exc}", 8000)
            return False
        review.ledger.apply(_event(removed=previous))
        self.reviewed[int(item.data)] = False
        self.gallery.viewport().update()
        self._update_count()
        return True

    def _advance(self) -> None:
        row = self.gallery.current_row()
        if row >= 0 and row + 1 < self.gallery.count():
            self.gallery.set_current_row(row + 1)

    def reclassify_menu(self, item: GalleryItem | None = None) -> QMenu | None:
        """The menu of classes for a reclassification (digits 1-9 pick the first nine)."""
        review = self.review
        item = item if item is not None else self.gallery.current_item()
        if review is None or item is None:
            return None
        menu = QMenu(self.gallery)
        menu.setTitle("Reclassify as")
        label = review.labels[int(item.data)] if review.labels is not None else None
        for k, name in enumerate(review.classes):
            text = f"&{k + 1}  {name}" if k < 9 else name
            if name == label:
                text += "  (model)"
            action = menu.addAction(text)
            action.setData(name)
            action.triggered.connect(lambda _=False, n=name, it=item: self.decide("reclassified", n, item=it))
        return menu

    def open_reclassify_menu(self, item: GalleryItem | None = None) -> QMenu | None:
        menu = self.reclassify_menu(item)
        if menu is None:
            return None
        rect = self.gallery.visualRect(self.gallery.currentIndex())
        menu.aboutToHide.connect(menu.deleteLater)
        menu.popup(self.gallery.viewport().mapToGlobal(rect.center() if rect.isValid() else QPoint(0, 0)))
        self.menu = menu
        return menu

    def _context_menu(self, pos) -> None:
        index = self.gallery.indexAt(pos)
        item = self.gallery.item(index.row()) if index.isValid() else None
        if item is None:
            return
        self.gallery.set_current_row(index.row())
        menu = QMenu(self.gallery)
        for text, slot in (("Show on Slide\tEnter", lambda: self.go_to(item)),
                           ("Accept\tA", lambda: self.decide("accepted", item=item)),
                           ("Reject\tX", lambda: self.decide("rejected", item=item))):
            menu.addAction(QAction(text, menu, triggered=slot))
        sub = self.reclassify_menu(item)
        if sub is not None:
            sub.setTitle("Reclassify as\tC")
            menu.addMenu(sub)
        clear = QAction("Clear Decision", menu, triggered=lambda: self.clear_decision(item))
        clear.setEnabled(self.review is not None and self.review.ledger.decision(self.review.ids[int(item.data)])
                         is not None)
        menu.addAction(clear)
        menu.aboutToHide.connect(menu.deleteLater)
        menu.popup(self.gallery.viewport().mapToGlobal(pos))


def _event(added=(), removed=()):
    from core.annotations import StoreEvent

    return StoreEvent(added=tuple(added), removed=tuple(removed))
