"""The "Annotations" dock: every object of the open slide in a table (class, shape, size, source), counts per
class, and a click that takes the view there.

A slide may carry a few drawn regions or 100,000 imported cells, so the table is a model over a plain list
(rows are only formatted when Qt shows them, sizes computed once per object) and follows the store's events
incrementally: a drawn rectangle adds one row rather than rebuilding the list.
"""

from __future__ import annotations

from collections import Counter

from PySide6.QtCore import QAbstractTableModel, QItemSelection, QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QTableView,
                               QVBoxLayout, QWidget)

from core.annotations import classification

from .annotation_drawing import shape_kind, size_text, size_value

UNCLASSIFIED = "Unclassified"
#: QuPath draws unclassified objects red; so does ``Annotation.display_color``.
UNCLASSIFIED_COLOR = (255, 0, 0)
#: (label, object types or None for all, only reviewed objects)
FILTERS = (
    ("All objects", None, False),
    ("Annotations", ("annotation",), False),
    ("Cells and detections", ("cell", "detection"), False),
    ("Reviewed", None, True),
)
#: Larger changes than this rebuild the table instead of editing it row by row.
INCREMENTAL_LIMIT = 200

_ICONS: dict[tuple[int, int, int], QIcon] = {}


def colour_icon(rgb) -> QIcon:
    """A small square of the class colour (cached: a table shows the same few colours again and again)."""
    rgb = tuple(int(v) for v in rgb)
    icon = _ICONS.get(rgb)
    if icon is None:
        pixmap = QPixmap(12, 12)
        pixmap.fill(QColor(*rgb))
        icon = _ICONS[rgb] = QIcon(pixmap)
    return icon


def object_type_text(a) -> str:
    """The Type column: the drawn shape for annotations, the object type for model output."""
    if a.object_type == "annotation":
        return shape_kind(a.geometry)
    return a.object_type.capitalize()


def source_text(a) -> str:
    return f"{a.source} ({a.review.status})" if a.review is not None else a.source


class AnnotationTableModel(QAbstractTableModel):
    COLUMNS = ("Class", "Type", "Size", "Source")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list = []
        self._row_of: dict[str, int] = {}
        self._sizes: dict[str, tuple[str, float]] = {}
        self.mpp = (1.0, 1.0)
        self.types = None
        self.reviewed_only = False

    # ------------------------------------------------------------------------------------------- Qt model API
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        a = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return a.class_name or UNCLASSIFIED
            if col == 1:
                return object_type_text(a)
            if col == 2:
                return self._size(a)[0]
            return source_text(a)
        if role == Qt.ItemDataRole.DecorationRole and col == 0:
            return colour_icon(a.display_color)
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [f"{object_type_text(a)}, {a.class_name or UNCLASSIFIED}"]
            if a.name:
                lines.append(a.name)
            if a.score is not None:
                lines.append(f"score {a.score:.3f}")
            if a.locked:
                lines.append("locked")
            if a.notes:
                lines.append(a.notes)
            return "\n".join(lines)
        if role == Qt.ItemDataRole.UserRole:
            return a.id
        return None

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        keys = {
            0: lambda a: (a.class_name or "").lower(),
            1: object_type_text,
            2: lambda a: self._size(a)[1],
            3: source_text,
        }
        if column not in keys:
            return
        self.layoutAboutToBeChanged.emit()
        self._rows.sort(key=keys[column], reverse=order == Qt.SortOrder.DescendingOrder)
        self._reindex()
        self.layoutChanged.emit()

    # ---------------------------------------------------------------------------------------------- content
    def _size(self, a) -> tuple[str, float]:
        cached = self._sizes.get(a.id)
        if cached is None:
            cached = self._sizes[a.id] = (size_text(a.geometry, self.mpp), size_value(a.geometry, self.mpp))
        return cached

    def accepts(self, a) -> bool:
        if self.types is not None and a.object_type not in self.types:
            return False
        return not self.reviewed_only or a.review is not None or a.source == "review"

    def _reindex(self) -> None:
        self._row_of = {a.id: i for i, a in enumerate(self._rows)}

    def reset(self, objects) -> None:
        self.beginResetModel()
        self._rows = [a for a in objects if self.accepts(a)]
        self._sizes.clear()
        self._reindex()
        self.endResetModel()

    def apply(self, event, store) -> None:
        """Follow one ``StoreEvent``: rows added, removed or refreshed; a reload or a big batch rebuilds."""
        if event.reason == "load" or len(event.added) + len(event.removed) > INCREMENTAL_LIMIT:
            self.reset(store.snapshot())
            return
        drop = {a.id for a in event.removed}
        drop.update(new.id for _, new in event.changed if not self.accepts(new))
        rows = sorted((self._row_of[k] for k in drop if k in self._row_of), reverse=True)
        for row in rows:  # from the bottom up, so the rows still to remove keep their numbers
            self.beginRemoveRows(QModelIndex(), row, row)
            self._sizes.pop(self._rows[row].id, None)
            del self._rows[row]
            self.endRemoveRows()
        if rows:
            self._reindex()
        appended = []
        for _, new in event.changed:
            self._sizes.pop(new.id, None)
            if not self.accepts(new):
                continue
            row = self._row_of.get(new.id)
            if row is None:
                appended.append(new)
            else:
                self._rows[row] = new
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.COLUMNS) - 1))
        appended += [a for a in event.added if self.accepts(a) and a.id not in self._row_of]
        self._append(appended)

    def _append(self, objs: list) -> None:
        if not objs:
            return
        start = len(self._rows)
        self.beginInsertRows(QModelIndex(), start, start + len(objs) - 1)
        self._rows.extend(objs)
        for i, a in enumerate(objs, start):
            self._row_of[a.id] = i
        self.endInsertRows()

    def row_of(self, key: str) -> int | None:
        return self._row_of.get(key)

    def object_at(self, row: int):
        return self._rows[row]

    def objects(self) -> list:
        return list(self._rows)

    def set_mpp(self, mpp) -> None:
        self.mpp = (float(mpp[0]), float(mpp[1]))
        self._sizes.clear()
        if self._rows:
            self.dataChanged.emit(self.index(0, 2), self.index(len(self._rows) - 1, 2))


class AnnotationListPanel(QWidget):
    """Table of the store's objects with a filter and per-class counts.

    ``objectActivated(id)``: a row was clicked (go there); ``selectionEdited(ids)``: the user changed the selected
    rows. ``select_ids`` mirrors the tools' selection without echoing it back.
    """

    objectActivated = Signal(str)
    selectionEdited = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = None
        self._syncing = False
        box = QVBoxLayout(self)
        box.setContentsMargins(4, 4, 4, 4)
        box.setSpacing(4)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show"))
        self.filter_combo = QComboBox()
        for label, _, _ in FILTERS:
            self.filter_combo.addItem(label)
        self.filter_combo.currentIndexChanged.connect(self._filter_changed)
        top.addWidget(self.filter_combo, 1)
        box.addLayout(top)
        self.model = AnnotationTableModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(22)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # class names vary most
        for column, width in ((1, 68), (2, 80), (3, 66)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # drawing order until a header is clicked
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.clicked.connect(self._clicked)
        self.table.selectionModel().selectionChanged.connect(self._rows_selected)
        box.addWidget(self.table, 1)
        self.counts_label = QLabel()
        self.counts_label.setWordWrap(True)
        self.counts_label.setTextFormat(Qt.TextFormat.RichText)
        self.counts_label.setStyleSheet("color: #c4c8d0; padding: 2px;")
        box.addWidget(self.counts_label)
        self._counts_timer = QTimer(self, singleShot=True, interval=150, timeout=self.update_counts)
        self.update_counts()

    # ----------------------------------------------------------------------------------------------- content
    def set_store(self, store, mpp=(1.0, 1.0)) -> None:
        self.store = store
        self.model.mpp = (float(mpp[0]), float(mpp[1]))
        self.model.reset(store.snapshot() if store is not None else [])
        self.update_counts()

    def set_mpp(self, mpp) -> None:
        self.model.set_mpp(mpp)

    def store_changed(self, event) -> None:
        if self.store is None:
            return
        self.model.apply(event, self.store)
        self._counts_timer.start()

    def _filter_changed(self, index: int) -> None:
        _, types, reviewed = FILTERS[index]
        self.model.types, self.model.reviewed_only = types, reviewed
        self.model.reset(self.store.snapshot() if self.store is not None else [])
        self.update_counts()

    def update_counts(self) -> None:
        """Objects per class for the current filter, with the class colours."""
        if self.store is None:
            self.counts_label.setText("<i>No slide open.</i>")
            return
        if self.model.reviewed_only:
            counts = Counter(a.class_name for a in self.model.objects())
        else:
            counts = Counter()
            for (_, name), n in self.store.counts(types=self.model.types).items():
                counts[name] += n
        total = sum(counts.values())
        if not total:
            self.counts_label.setText("<i>No objects. Draw with the Tools toolbar or use File › Import "
                                      "Annotations….</i>")
            return
        parts = []
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] or "")):
            r, g, b = classification(name).color if name is not None else UNCLASSIFIED_COLOR
            parts.append(f"<span style='color: rgb({r},{g},{b});'>&#9632;</span>&nbsp;{name or UNCLASSIFIED}"
                         f"&nbsp;<b>{n:,}</b>")
        self.counts_label.setText(f"<b>{total:,}</b> object{'s' if total != 1 else ''}: " + " &nbsp; ".join(parts))

    # --------------------------------------------------------------------------------------------- selection
    def select_ids(self, ids) -> None:
        """Show the tools' selection in the table (no ``selectionEdited`` echo)."""
        selection = QItemSelection()
        rows = [r for r in (self.model.row_of(k) for k in ids) if r is not None]
        last = self.model.columnCount() - 1
        for r in rows:
            selection.select(self.model.index(r, 0), self.model.index(r, last))
        self._syncing = True
        try:
            self.table.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        finally:
            self._syncing = False
        if rows:
            self.table.scrollTo(self.model.index(rows[0], 0))

    def _rows_selected(self, *_):
        if self._syncing:
            return
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        self.selectionEdited.emit([self.model.object_at(r).id for r in rows])

    def _clicked(self, index) -> None:
        if index.isValid():
            self.objectActivated.emit(self.model.object_at(index.row()).id)
