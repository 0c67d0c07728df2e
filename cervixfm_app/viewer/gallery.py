"""A thumbnail grid of cells (or any slide regions and image files), shared by the suspicious-cell gallery and the
similar-cell search.

A reviewer scrolls through hundreds of cells and judges each by eye, so the grid must scroll without stalls however
many items it holds and show every thumbnail as soon as it can. It is a ``QListView`` with uniform item sizes over
a list model that creates nothing per item (the items may be a lazy sequence), painted by one delegate. Pixels are
never read on the GUI thread: a painted item whose thumbnail is missing shows a placeholder and asks the
``thumbnails.ThumbnailLoader`` for the rows on screen plus a page ahead (found by a binary search over the rows'
rectangles, so a list of 100,000 costs the same as one of 100).

Keys: arrows / Page Up / Page Down / Home / End move, Enter activates (as a click does), and any other key goes to
the owner's ``key_handler`` (the suspicious-cell panel's A / X / C decisions).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Sequence

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPointF, QRect, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate

from .thumbnails import THUMB_PX, ImageFile, Picture, SlideRegion, ThumbnailLoader

__all__ = ["BADGES", "Gallery", "GalleryItem", "ImageFile", "SlideRegion"]

CAPTION_PX = 34
PAD = 5
#: Rows read ahead of the visible ones, as a share of the visible rows (one page down, half a page up).
LOOKAHEAD_PAGES = 1.0
BADGES = {
    "accepted": QColor(46, 160, 67),
    "rejected": QColor(205, 55, 55),
    "reclassified": QColor(226, 146, 24),
}


@dataclasses.dataclass
class GalleryItem:
    key: Hashable
    picture: Picture | None
    title: str  # first caption line: the score or distance
    subtitle: str = ""  # second line: the label
    badge: str | None = None  # a review status ("accepted", "rejected", "reclassified") or None
    tooltip: str = ""
    data: Any = None  # whatever the owner needs when the item is activated
    #: Tick marks around the thumbnail's centre: a cell crop shows its neighbours too, the ticks say which cell.
    mark_centre: bool = False



# ------------------------------------------------------------------------------------------------ the model
ITEM_ROLE = Qt.ItemDataRole.UserRole + 1


class GalleryModel(QAbstractListModel):
    """Rows over a sequence of ``GalleryItem`` (a list, or any lazy sequence with ``len`` and indexing)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._items: Sequence[GalleryItem] = []

    def set_items(self, items: Sequence[GalleryItem]) -> None:
        self.beginResetModel()
        self._items = items
        self.endResetModel()

    @property
    def items(self) -> Sequence[GalleryItem]:
        return self._items

    def item(self, row: int) -> GalleryItem | None:
        return self._items[row] if 0 <= row < len(self._items) else None

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        item = self.item(index.row()) if index.isValid() else None
        if item is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return item.title
        if role == Qt.ItemDataRole.ToolTipRole:
            return item.tooltip or None
        if role == ITEM_ROLE:
            return item
        return None

    def rows_changed(self, first: int, last: int) -> None:
        if len(self._items) and first <= last:
            self.dataChanged.emit(self.index(max(0, first)), self.index(min(last, len(self._items) - 1)))


# --------------------------------------------------------------------------------------------- the painting
class GalleryDelegate(QStyledItemDelegate):
    def __init__(self, gallery: "Gallery") -> None:
        super().__init__(gallery)
        self.gallery = gallery

    def sizeHint(self, option, index) -> QSize:  # noqa: N802 - Qt API
        return self.gallery.cell_size()

    def paint(self, painter: QPainter, option, index) -> None:
        item: GalleryItem | None = index.data(ITEM_ROLE)
        if item is None:
            return
        g = self.gallery
        rect = option.rect
        size = g.thumb_px
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.fillRect(rect, QColor(50, 56, 66) if selected else QColor(36, 39, 44))
        thumb = QRect(rect.x() + (rect.width() - size) // 2, rect.y() + PAD, size, size)
        if item.badge == "rejected":
            painter.setOpacity(0.5)
        image = g.loader.image(item.picture) if item.picture is not None else None
        if image is not None:
            target = QRect(0, 0, image.width(), image.height())
            target.moveCenter(thumb.center())
            painter.drawImage(target, image)
        else:
            failed = item.picture is not None and item.picture in g.loader.failed
            painter.fillRect(thumb, QColor(70, 74, 82) if not failed else QColor(92, 80, 80))
            painter.setPen(QColor(150, 155, 165))
            painter.drawText(thumb, Qt.AlignmentFlag.AlignCenter, "not readable" if failed else "…")
            if item.picture is not None and not failed:
                g.thumbnail_missing()
        painter.setOpacity(1.0)
        if item.mark_centre and image is not None:
            paint_centre_ticks(painter, QRectF(thumb))
        if selected:
            painter.setPen(QPen(QColor(110, 170, 240), 2))
            painter.drawRect(QRectF(rect).adjusted(1, 1, -1, -1))
        if item.badge in BADGES:
            paint_badge(painter, item.badge, QPointF(thumb.right() - 10, thumb.top() + 10), 9)
        text_top = thumb.bottom() + 3
        font = QFont(painter.font())
        font.setPointSizeF(8.5)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor(230, 232, 236))
        line = QRect(rect.x() + 3, text_top, rect.width() - 6, 15)
        painter.drawText(line, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter,
                         painter.fontMetrics().elidedText(item.title, Qt.TextElideMode.ElideRight, line.width()))
        if item.subtitle:
            font.setBold(False)
            painter.setFont(font)
            painter.setPen(QColor(175, 180, 190))
            line.translate(0, 15)
            painter.drawText(line, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter,
                             painter.fontMetrics().elidedText(item.subtitle, Qt.TextElideMode.ElideRight,
                                                              line.width()))
        painter.restore()


def paint_centre_ticks(painter: QPainter, thumb: QRectF) -> None:
    """Four short ticks pointing at the thumbnail's centre from a fifth of its size away."""
    c = thumb.center()
    gap, length = thumb.width() * 0.2, thumb.width() * 0.08
    painter.save()
    for colour, width in ((QColor(0, 0, 0, 140), 3.0), (QColor(255, 230, 60), 1.4)):
        painter.setPen(QPen(colour, width))
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            painter.drawLine(QPointF(c.x() + dx * gap, c.y() + dy * gap),
                             QPointF(c.x() + dx * (gap + length), c.y() + dy * (gap + length)))
    painter.restore()


def paint_badge(painter: QPainter, status: str, centre: QPointF, radius: float) -> None:
    """A coloured disc with a check (accepted), a cross (rejected) or a turning arrow (reclassified), drawn as
    shapes so it looks the same whatever fonts the machine has."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setPen(QPen(QColor(20, 20, 20, 160), 1.2))
    painter.setBrush(BADGES[status])
    painter.drawEllipse(centre, radius, radius)
    pen = QPen(QColor(255, 255, 255), max(1.6, radius / 4.5))
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    r = radius * 0.5
    x, y = centre.x(), centre.y()
    if status == "accepted":
        painter.drawPolyline(QPolygonF([QPointF(x - r, y), QPointF(x - r * 0.2, y + r * 0.8),
                                        QPointF(x + r, y - r * 0.7)]))
    elif status == "rejected":
        painter.drawLine(QPointF(x - r, y - r), QPointF(x + r, y + r))
        painter.drawLine(QPointF(x - r, y + r), QPointF(x + r, y - r))
    else:
        path = QPainterPath()
        path.arcMoveTo(QRectF(x - r, y - r, 2 * r, 2 * r), 60)
        path.arcTo(QRectF(x - r, y - r, 2 * r, 2 * r), 60, 270)
        painter.drawPath(path)
        tip = path.currentPosition()
        painter.drawLine(tip, tip + QPointF(r * 0.7, 0))
        painter.drawLine(tip, tip + QPointF(0, -r * 0.7))
    painter.restore()


# ------------------------------------------------------------------------------------------------ the view
class Gallery(QListView):
    """The grid. ``itemActivated(item)`` on click or Enter; ``currentItemChanged(item or None)``."""

    itemActivated = Signal(object)
    currentItemChanged = Signal(object)

    def __init__(self, parent=None, thumb_px: int = THUMB_PX) -> None:
        super().__init__(parent)
        self.thumb_px = int(thumb_px)
        self.loader = ThumbnailLoader(self.thumb_px, parent=self)
        self.loader.loaded.connect(self.viewport().update)
        self.gallery_model = GalleryModel(self)
        self.setModel(self.gallery_model)
        self.setItemDelegate(GalleryDelegate(self))
        self.setViewMode(QListView.ViewMode.ListMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.SinglePass)
        self.setSpacing(3)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setStyleSheet("QListView { background: #1c1e22; border: none; }")
        #: ``handler(event, item) -> bool``: keys the grid itself does not use (True = handled).
        self.key_handler: Callable[[Any, GalleryItem | None], bool] | None = None
        self.empty_text = ""
        self._request_timer = QTimer(self, singleShot=True, interval=0, timeout=self.request_visible)
        self.verticalScrollBar().valueChanged.connect(lambda _: self._schedule_requests())
        self.clicked.connect(self._on_clicked)

    # ------------------------------------------------------------------------------------------- contents
    def cell_size(self) -> QSize:
        return QSize(self.thumb_px + 2 * PAD + 8, self.thumb_px + CAPTION_PX + 2 * PAD)

    def set_items(self, items: Sequence[GalleryItem], current_row: int | None = 0) -> None:
        """Show ``items``; ``current_row`` (clamped) becomes the current item, None leaves none."""
        self.gallery_model.set_items(items)
        if current_row is not None and len(items):
            self.set_current_row(min(max(current_row, 0), len(items) - 1))
        else:
            self.currentItemChanged.emit(None)
        self._schedule_requests()
        self.viewport().update()

    @property
    def items(self) -> Sequence[GalleryItem]:
        return self.gallery_model.items

    def count(self) -> int:
        return len(self.gallery_model.items)

    def item(self, row: int) -> GalleryItem | None:
        return self.gallery_model.item(row)

    def current_row(self) -> int:
        index = self.currentIndex()
        return index.row() if index.isValid() else -1

    def current_item(self) -> GalleryItem | None:
        return self.item(self.current_row())

    def set_current_row(self, row: int) -> None:
        index = self.gallery_model.index(row)
        if index.isValid():
            self.setCurrentIndex(index)
            self.scrollTo(index)

    def refresh_rows(self, first: int = 0, last: int | None = None) -> None:
        """Repaint rows whose items changed in place (a badge)."""
        self.gallery_model.rows_changed(first, self.count() - 1 if last is None else last)

    def set_empty_text(self, text: str) -> None:
        self.empty_text = text
        self.viewport().update()

    def release_slides(self) -> None:
        """Close the slide handles the thumbnails were read from (the slide was closed); the cache stays."""
        self.loader.reset()

    # ----------------------------------------------------------------------------------------- thumbnails
    def thumbnail_missing(self) -> None:
        """Called by the delegate while painting a placeholder: ask for what is on screen once painting ends."""
        self._schedule_requests()

    def _schedule_requests(self) -> None:
        if not self._request_timer.isActive():
            self._request_timer.start()

    def visible_rows(self) -> tuple[int, int]:
        """(first, last) rows meeting the viewport, or (0, -1); rows run left to right, top to bottom, so a binary
        search on their rectangles finds both ends without visiting every row."""
        n = self.count()
        if n == 0 or not self.isVisible():
            return 0, -1
        height = self.viewport().height()

        def first_where(pred) -> int:
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi) // 2
                if pred(self.visualRect(self.gallery_model.index(mid))):
                    hi = mid
                else:
                    lo = mid + 1
            return lo

        first = first_where(lambda r: r.bottom() >= 0)
        after = first_where(lambda r: r.top() > height)
        return first, min(n, after) - 1

    def request_visible(self) -> int:
        """Queue the thumbnails of the visible rows, then a page below and half a page above."""
        first, last = self.visible_rows()
        if last < first:
            return 0
        page = last - first + 1
        ahead = int(page * LOOKAHEAD_PAGES)
        rows = list(range(first, last + 1)) + list(range(last + 1, min(self.count(), last + 1 + ahead))) + \
            list(range(first - 1, max(-1, first - 1 - ahead // 2), -1))
        return self.loader.request([self.item(r).picture for r in rows])

    # ------------------------------------------------------------------------------------------------ events
    def _on_clicked(self, index: QModelIndex) -> None:
        item = self.item(index.row())
        if item is not None:
            self.itemActivated.emit(item)

    def currentChanged(self, current: QModelIndex, previous: QModelIndex) -> None:  # noqa: N802 - Qt API
        super().currentChanged(current, previous)
        if current.isValid():
            self.selectionModel().select(current, self.selectionModel().SelectionFlag.ClearAndSelect)
        self.currentItemChanged.emit(self.item(current.row()) if current.isValid() else None)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt API
        key = event.key()
        k = Qt.Key
        if key in (k.Key_Return, k.Key_Enter):
            item = self.current_item()
            if item is not None:
                self.itemActivated.emit(item)
            event.accept()
            return
        if key in (k.Key_Left, k.Key_Right, k.Key_Up, k.Key_Down, k.Key_PageUp, k.Key_PageDown, k.Key_Home,
                   k.Key_End):
            super().keyPressEvent(event)
            if not self.currentIndex().isValid() and self.count():
                self.set_current_row(0)
            return
        if self.key_handler is not None and self.key_handler(event, self.current_item()):
            event.accept()
            return
        event.ignore()

    def keyboardSearch(self, search: str) -> None:  # noqa: N802 - Qt API
        """Typing letters must not jump around the grid: letters are review commands here."""

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._schedule_requests()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self._schedule_requests()

    def paintEvent(self, event) -> None:  # noqa: N802
        super().paintEvent(event)
        if self.count() == 0 and self.empty_text:
            p = QPainter(self.viewport())
            p.setPen(QColor(150, 155, 165))
            p.drawText(self.viewport().rect().adjusted(12, 12, -12, -12),
                       int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), self.empty_text)
            p.end()
