"""Annotation tools of the viewer: the Tools toolbar, the Annotations and Edit menus, the Annotations dock, the
right-click menu, and (through ``annotation_files``) File › Import/Export Annotations, Export Regions, Save Snapshot.

``AnnotationTools`` is the one place an edit of the open slide's ``AnnotationStore`` is made from the GUI: the
mouse tools (``annotation_drawing``) and the dock ask it to add, select, move, delete or reclassify, and it names
every change as an undo step ("Add rectangle", "Move polygon"), so Edit › Undo says what it will undo. The store
itself is ``core`` (napari style: the model lives apart from its views); the session autosaves it to the slide's
sidecar.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import shapely
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QIcon, QKeySequence, QPainter, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import QComboBox, QDockWidget, QLabel, QMenu, QToolBar
from shapely.affinity import translate
from shapely.geometry import box

from core.annotations import Annotation, LockedError, classification, registry, reviewed

from .annotation_drawing import PICK_PX, PointTool, PolygonTool, RectangleTool, SelectTool, shape_kind, size_text
from .annotation_files import AnnotationFiles
from .annotation_layer import AnnotationLayer
from .annotation_list import UNCLASSIFIED, AnnotationListPanel, colour_icon

#: "S" is taken by Find Similar Cells; V selects, as in most drawing programs.
TOOL_SHORTCUTS = {"navigate": "M", "select": "V", "rectangle": "R", "polygon": "P", "point": "."}


class AnnotationTools(QObject):
    """Tools, menus, dock and file actions for the open slide's annotations (``window.annotation_tools``)."""

    #: The selected object ids changed (a tuple of ids).
    selectionChanged = Signal(tuple)

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.view = window.view
        self.session = None
        self.layer: AnnotationLayer | None = None
        self.selection: tuple[str, ...] = ()
        self.current_class = None
        self._save_error: str | None = None
        self.tools = {"select": SelectTool(self), "rectangle": RectangleTool(self), "polygon": PolygonTool(self),
                      "point": PointTool(self)}
        self._build_actions()
        self._build_toolbar()
        self._build_menus()
        self._build_dock()
        #: File › Import/Export Annotations, Export Regions, Save Snapshot (``annotation_files``).
        self.files = AnnotationFiles(self)
        self.save_label = QLabel()
        self.save_label.hide()
        window.statusBar().addPermanentWidget(self.save_label)
        self._save_poll = QTimer(self, interval=500, timeout=self._update_save_label)
        window.sessionChanged.connect(self._session_changed)
        window.slideOpened.connect(lambda _path: self.list_panel.set_mpp(self.mpp()))
        self.view.installEventFilter(self)
        self.view.toolChanged.connect(lambda _tool: self._sync_tool_actions())
        self._update_actions()

    # ------------------------------------------------------------------------------------------------ actions
    def _build_actions(self) -> None:
        w = self.window
        self.tool_group = QActionGroup(self)
        # optional: when another panel's mouse mode (e.g. the similar-cell picker) is current, none is checked
        self.tool_group.setExclusionPolicy(QActionGroup.ExclusionPolicy.ExclusiveOptional)
        self._shown_tool = None
        self.tool_actions: dict[str, QAction] = {}
        labels = {"navigate": ("&Navigate", "Pan and zoom; no drawing"),
                  "select": ("&Select / Edit", "Click to select, drag to move, Delete to remove"),
                  "rectangle": ("&Rectangle", "Drag to draw a rectangle"),
                  "polygon": ("&Polygon", "Click vertices, double-click or Enter to close; drag for freehand; "
                                          "Backspace removes a vertex, Esc cancels"),
                  "point": ("P&oint", "Click to place a point")}
        for key, (text, tip) in labels.items():
            action = QAction(_tool_icon(key), text, w, checkable=True, shortcut=TOOL_SHORTCUTS[key])
            action.setToolTip(f"{text.replace('&', '')} ({TOOL_SHORTCUTS[key]}): {tip}")
            action.setStatusTip(tip)
            action.triggered.connect(partial(self.use_tool, key))
            self.tool_group.addAction(action)
            w.addAction(action)
            self.tool_actions[key] = action
        self.tool_actions["navigate"].setChecked(True)

        self.undo_action = QAction("&Undo", w, shortcut=QKeySequence("Ctrl+Z"), triggered=self.undo)
        self.redo_action = QAction("&Redo", w, shortcut=QKeySequence("Ctrl+Shift+Z"), triggered=self.redo)
        self.delete_action = QAction("&Delete Selected", w, shortcut=QKeySequence(Qt.Key.Key_Delete),
                                     triggered=self.delete_selection)
        self.lock_action = QAction("&Lock Selected", w, triggered=lambda: self.set_locked(True))
        self.unlock_action = QAction("Unl&ock Selected", w, triggered=lambda: self.set_locked(False))
        self.zoom_selection_action = QAction("&Zoom to Selection", w, triggered=self.zoom_to_selection)
        self.show_layer_action = QAction("Show &Annotations", w, checkable=True, checked=True,
                                         toggled=self._toggle_layer)
        for action in (self.undo_action, self.redo_action, self.delete_action):
            w.addAction(action)

    def _build_toolbar(self) -> None:
        bar = self.toolbar = QToolBar("Tools", self.window)
        bar.setObjectName("annotationToolbar")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for action in self.tool_actions.values():
            bar.addAction(action)
        bar.addSeparator()
        bar.addWidget(QLabel(" Class "))
        self.class_combo = QComboBox()
        self.class_combo.setEditable(True)
        self.class_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.class_combo.setMinimumContentsLength(14)
        self.class_combo.setToolTip("Class of new annotations; choosing a class while objects are selected also "
                                    "sets theirs. Type a name for a new class.")
        self.class_combo.addItem(UNCLASSIFIED, None)
        for name in registry().names():
            self.class_combo.addItem(colour_icon(classification(name).color), name, name)
        self.class_combo.textActivated.connect(self._class_chosen)
        bar.addWidget(self.class_combo)
        self.window.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)

    def _build_menus(self) -> None:
        w = self.window
        bar = w.menuBar()
        self.edit_menu = QMenu("&Edit", w)
        self.edit_menu.addActions([self.undo_action, self.redo_action])
        self.edit_menu.addSeparator()
        self.edit_menu.addAction(self.delete_action)
        bar.insertMenu(w.view_menu.menuAction(), self.edit_menu)

        self.menu = bar.addMenu("&Annotations")
        self.menu.addActions(list(self.tool_actions.values()))
        self.menu.addSeparator()
        self.class_menu = self.menu.addMenu("Set &Class of Selection")
        self.class_menu.aboutToShow.connect(lambda: self._fill_class_menu(self.class_menu))
        self.menu.addActions([self.delete_action, self.lock_action, self.unlock_action, self.zoom_selection_action])
        self.menu.addSeparator()
        self.menu.addAction(self.show_layer_action)


    def _build_dock(self) -> None:
        self.list_panel = AnnotationListPanel()
        self.list_panel.objectActivated.connect(self.go_to)
        self.list_panel.selectionEdited.connect(self.set_selection)
        dock = self.dock = QDockWidget("Annotations", self.window)
        dock.setObjectName("annotationsDock")
        dock.setWidget(self.list_panel)
        self.window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.window.tabifyDockWidget(self.window.layers_dock, dock)
        self.window.layers_dock.raise_()
        toggle = dock.toggleViewAction()
        toggle.setText("Annotations &Panel")
        self.menu.addAction(toggle)

    def _fill_class_menu(self, menu: QMenu) -> None:
        menu.clear()
        menu.addAction(UNCLASSIFIED, lambda: self.set_class_of_selection(None))
        menu.addSeparator()
        for name in registry().names():
            menu.addAction(colour_icon(classification(name).color), name,
                           partial(self.set_class_of_selection, name))

    def _update_actions(self) -> None:
        have = self.session is not None
        selected = bool(self.selection)
        for action in self.tool_actions.values():
            action.setEnabled(have)
        self.class_combo.setEnabled(have)
        self.delete_action.setEnabled(selected)
        self.class_menu.setEnabled(selected)
        objs = self.selected_objects()
        self.lock_action.setEnabled(any(not a.locked for a in objs))
        self.unlock_action.setEnabled(any(a.locked for a in objs))
        self.zoom_selection_action.setEnabled(selected)
        self.show_layer_action.setEnabled(have)
        self.files.update_actions()
        self._update_undo_actions()

    def _update_undo_actions(self) -> None:
        store = self.store
        undo = store.undo_label if store is not None else None
        redo = store.redo_label if store is not None else None
        self.undo_action.setEnabled(undo is not None)
        self.redo_action.setEnabled(redo is not None)
        self.undo_action.setText(f"&Undo {undo}" if undo else "&Undo")
        self.redo_action.setText(f"&Redo {redo}" if redo else "&Redo")

    # ------------------------------------------------------------------------------------------------ session
    @property
    def store(self):
        return self.session.store if self.session is not None else None

    def _session_changed(self, session) -> None:
        old = self.session
        if old is not None:
            try:
                old.annotationsChanged.disconnect(self._store_changed)
                old.message.disconnect(self._session_message)
            except (RuntimeError, TypeError):
                pass
        self._save_error = None
        if self.layer is not None:
            self.view.remove_layer(self.layer)
            self.layer.close()
            self.layer.deleteLater()
            self.layer = None
        self.session = session
        self.selection = ()
        self.tool_actions["navigate"].setChecked(True)  # the window resets the view's tool with a new slide
        self.files.session_changed()
        if session is not None:
            self.layer = AnnotationLayer(session.store, visible=self.show_layer_action.isChecked(), parent=self)
            self.layer.changed.connect(self._layer_visibility_changed)
            self.view.add_layer(self.layer)
            session.annotationsChanged.connect(self._store_changed)
            session.message.connect(self._session_message)
            self.list_panel.set_store(session.store, self.mpp())
        else:
            self.list_panel.set_store(None)
        self._update_actions()
        self._update_save_label()

    def _store_changed(self, event) -> None:
        if self.layer is not None:
            self.layer.store_changed(event)
        self.list_panel.store_changed(event)
        store = self.store
        if self.selection and store is not None:
            alive = tuple(k for k in self.selection if k in store)
            if alive != self.selection:
                self.set_selection(alive)
        self._update_actions()
        self._update_save_label()

    def _update_save_label(self) -> None:
        session = self.session
        if session is None:
            self.save_label.hide()
            self._save_poll.stop()
            return
        self.save_label.show()
        if not session.unsaved:
            self._save_error = None
            self.save_label.setText("✓ Annotations saved")
            self.save_label.setToolTip(f"Annotations are saved automatically to {session.sidecar.path}")
            self._save_poll.stop()
            return
        if self._save_error:  # the session retries after the next edit; the work is kept in memory meanwhile
            self.save_label.setText("⚠ Annotations not saved")
            self.save_label.setToolTip(self._save_error)
        else:
            self.save_label.setText("● Annotations: saving…")
        if not self._save_poll.isActive():
            self._save_poll.start()

    def _session_message(self, text: str) -> None:
        if text.startswith("Annotations not saved"):
            self._save_error = text
            self._update_save_label()

    def _toggle_layer(self, on: bool) -> None:
        if self.layer is not None:
            self.layer.set_visible(on)

    def _layer_visibility_changed(self) -> None:
        if self.layer is not None and self.layer.visible != self.show_layer_action.isChecked():
            self.show_layer_action.setChecked(self.layer.visible)

    # ------------------------------------------------------------------------------------------- geometry help
    def mpp(self) -> tuple[float, float]:
        source = self.view.source
        if source is None:
            return 1.0, 1.0
        return float(source.mpp[0]), float(source.mpp[1])

    def slide_size(self) -> tuple[float, float]:
        source = self.view.source
        return (float(source.size[0]), float(source.size[1])) if source is not None else (0.0, 0.0)

    def clamp(self, point: QPointF) -> QPointF:
        w, h = self.slide_size()
        return QPointF(min(max(point.x(), 0.0), w), min(max(point.y(), 0.0), h))

    def message(self, text: str, ms: int = 6000) -> None:
        self.window.statusBar().showMessage(text, ms)

    # -------------------------------------------------------------------------------------------------- tools
    def use_tool(self, key: str, *_):
        """Make a mouse mode current: "navigate", "select", "rectangle", "polygon" or "point"."""
        if self.session is None:
            return
        self.tool_actions[key].setChecked(True)  # also when clicked while checked (the group allows unchecking)
        if key != "select":
            self.set_selection(())  # a drawing mode starts afresh: the class combo then only sets new shapes
        self.view.set_tool(self.tools.get(key))
        self.view.setFocus()

    def set_current_class(self, name: str | None) -> None:
        """The class new annotations get (None: unclassified); a new name is registered with its own colour."""
        self.current_class = classification(name) if name else None
        text = name or UNCLASSIFIED
        index = self.class_combo.findText(text)
        if index < 0:
            self.class_combo.addItem(colour_icon(self.current_class.color), text, text)
            index = self.class_combo.count() - 1
        self.class_combo.setCurrentIndex(index)

    def _class_chosen(self, text: str) -> None:
        name = text.strip()
        name = None if not name or name == UNCLASSIFIED else name
        self.set_current_class(name)
        if self.selection:
            self.set_class_of_selection(name)

    def add_drawn(self, geom, kind: str) -> Annotation | None:
        """Add a shape a tool drew (level-0 pixels) with the current class, as one undo step."""
        store = self.store
        if store is None:
            return None
        geom = _polygonal(geom) if shapely.get_dimensions(geom) == 2 else geom
        w, h = self.slide_size()
        slide_box = box(0, 0, w, h)
        if not slide_box.covers(geom):
            geom = _polygonal(geom.intersection(slide_box)) if shapely.get_dimensions(geom) == 2 else geom
        if geom is None or geom.is_empty or (shapely.get_dimensions(geom) == 2 and geom.area <= 0):
            self.message(f"The {kind} has no area on the slide; nothing was added.")
            return None
        a = Annotation(geom, "annotation", self.current_class, source="user")
        store.add(a, label=f"Add {kind}")
        size = size_text(geom, self.mpp())
        self.message(f"Added {kind}{f' ({size})' if size else ''}"
                     f"{f' as {a.class_name}' if a.class_name else ''}. Ctrl+Z undoes it.")
        return a

    # ---------------------------------------------------------------------------------------------- selection
    def object_at(self, point: QPointF) -> Annotation | None:
        """The object a click at level-0 ``point`` picks (within a few screen pixels), if the layer is shown."""
        store = self.store
        if store is None or self.layer is None or not self.layer.visible:
            return None
        hits = store.hit_test(point.x(), point.y(), PICK_PX * self.view.downsample)
        return hits[0] if hits else None

    def set_selection(self, ids) -> None:
        store = self.store
        ids = tuple(k for k in dict.fromkeys(ids) if store is not None and k in store)
        if ids == self.selection:
            return
        self.selection = ids
        if self.layer is not None:
            self.layer.set_selection(ids)
        self.list_panel.select_ids(ids)
        self._update_actions()
        self.selectionChanged.emit(ids)

    def toggle_selected(self, key: str) -> None:
        if key in self.selection:
            self.set_selection([k for k in self.selection if k != key])
        else:
            self.set_selection([*self.selection, key])

    def selected_objects(self) -> list[Annotation]:
        store = self.store
        if store is None:
            return []
        out = []
        for key in self.selection:
            try:
                out.append(store.get(key))
            except KeyError:
                continue
        return out

    # -------------------------------------------------------------------------------------------------- edits
    def _edit(self, do: Callable[[], None]) -> bool:
        """Run a store edit; a locked object or a missing one is a status message, not a crash."""
        try:
            do()
            return True
        except LockedError as exc:
            self.message(f"{exc}")
        except (KeyError, ValueError) as exc:
            self.message(f"The edit could not be made: {exc}")
        return False

    def move_selection(self, dx: float, dy: float) -> None:
        objs = self.selected_objects()
        if not objs or not (dx or dy):
            return
        locked = [a for a in objs if a.locked]
        if locked:
            self.message(f"{_describe(locked)} locked: unlock to move (Annotations › Unlock Selected).")
            return
        moved = [a.replace(geometry=translate(a.geometry, dx, dy),
                           nucleus=translate(a.nucleus, dx, dy) if a.nucleus is not None else None) for a in objs]
        self._edit(lambda: self.store.update(moved, label=f"Move {_describe(objs)}"))

    def delete_selection(self) -> None:
        objs = self.selected_objects()
        if not objs:
            return
        locked = [a for a in objs if a.locked]
        if locked:
            self.message(f"{_describe(locked)} locked: unlock before deleting (Annotations › Unlock Selected).")
            return
        if self._edit(lambda: self.store.remove([a.id for a in objs], label=f"Delete {_describe(objs)}")):
            self.set_selection(())
            self.message(f"Deleted {_describe(objs)}. Ctrl+Z brings it back.")

    def set_class_of_selection(self, name: str | None) -> None:
        """Reclassify the selection; a model's object keeps a record of the class it had (a review)."""
        objs = self.selected_objects()
        if not objs:
            return
        cls = classification(name) if name else None
        changed = []
        for a in objs:
            if a.class_name == name:
                continue
            if a.source.startswith("model:") and cls is not None:
                changed.append(reviewed(a, "reclassified", cls))
            else:
                changed.append(a.replace(classification=cls))
        if changed and self._edit(lambda: self.store.update(changed, label=f"Set class {name or UNCLASSIFIED}")):
            self.message(f"{_describe(changed)} now {name or UNCLASSIFIED}. Ctrl+Z undoes it.")

    def set_locked(self, locked: bool) -> None:
        objs = [a for a in self.selected_objects() if a.locked != locked]
        if objs:
            self._edit(lambda: self.store.update([a.replace(locked=locked) for a in objs],
                                                 label=f"{'Lock' if locked else 'Unlock'} {_describe(objs)}"))

    def undo(self) -> None:
        store = self.store
        if store is not None:
            try:
                label = store.undo_label
                if store.undo():
                    self.message(f"Undid: {label}")
            except RuntimeError as exc:  # another panel is in the middle of a transaction
                self.message(f"Cannot undo now: {exc}")
        self._update_undo_actions()

    def redo(self) -> None:
        store = self.store
        if store is not None:
            try:
                label = store.redo_label
                if store.redo():
                    self.message(f"Redid: {label}")
            except RuntimeError as exc:
                self.message(f"Cannot redo now: {exc}")
        self._update_undo_actions()

    # ----------------------------------------------------------------------------------------------- navigation
    def go_to(self, key: str) -> None:
        """Centre the view on an object, zooming out only as far as needed to see it whole."""
        store = self.store
        if store is None or key not in store:
            return
        if key not in self.selection:  # a Ctrl-click in the list extends the selection and still goes there
            self.set_selection([key])
        self._show_bounds(store.get(key).bounds)

    def zoom_to_selection(self) -> None:
        objs = self.selected_objects()
        if objs:
            b = shapely.bounds(shapely.GeometryCollection([a.geometry for a in objs]))
            self._show_bounds(tuple(float(v) for v in b))

    def _show_bounds(self, bounds) -> None:
        x0, y0, x1, y1 = bounds
        view = self.view
        needed = max((x1 - x0) * 1.3 / max(view.width(), 1), (y1 - y0) * 1.3 / max(view.height(), 1))
        view.set_view((x0 + x1) / 2, (y0 + y1) / 2, max(view.downsample, needed))

    # ---------------------------------------------------------------------------------------------- context menu
    def _sync_tool_actions(self) -> None:
        """Check the action of the view's current mouse mode; another panel may have set its own."""
        tool = self.view.tool
        if tool is self._shown_tool:
            return
        self._shown_tool = tool
        key = "navigate" if tool is None else next((k for k, t in self.tools.items() if t is tool), None)
        if key is not None:
            self.tool_actions[key].setChecked(True)
        elif self.tool_group.checkedAction() is not None:
            self.tool_group.checkedAction().setChecked(False)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        if obj is self.view and event.type() == QEvent.Type.ContextMenu and self.session is not None:
            hit = self.object_at(self.view.map_to_slide(QPointF(event.pos())))
            if hit is None and not self.selection:
                return False
            if hit is not None and hit.id not in self.selection:
                self.set_selection([hit.id])
            self.selection_menu().exec(event.globalPos())
            return True
        return False

    def selection_menu(self) -> QMenu:
        """The right-click menu for the selection."""
        menu = QMenu(self.window)
        classes = menu.addMenu("Set &Class")
        self._fill_class_menu(classes)
        menu.addActions([self.delete_action, self.lock_action, self.unlock_action, self.zoom_selection_action])
        menu.addSeparator()
        menu.addAction("Export Selection as GeoJSON…", lambda: self.files.choose_export(selection_only=True))
        menu.addAction(self.files.export_regions_action)
        return menu

# --------------------------------------------------------------------------------------------------- helpers
def _describe(objs) -> str:
    """ "rectangle", "cell", "3 objects": for undo labels and messages."""
    if len(objs) == 1:
        a = objs[0]
        return shape_kind(a.geometry).lower() if a.object_type == "annotation" else a.object_type
    return f"{len(objs)} objects"


def _polygonal(geom):
    """The polygonal part of ``geom`` made valid (a self-crossing freehand outline becomes a MultiPolygon)."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0]
    if not parts:
        return None
    return shapely.unary_union(parts)


def _tool_icon(kind: str) -> QIcon:
    """Small line icons drawn at start-up (the project ships no icon files)."""
    pixmap = QPixmap(20, 20)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    pen = QPen(QColor(215, 220, 228), 1.6)
    p.setPen(pen)
    if kind == "navigate":  # four arrows
        for a, b in (((10, 2), (10, 18)), ((2, 10), (18, 10))):
            p.drawLine(QPointF(*a), QPointF(*b))
        for tip, l1, l2 in (((10, 2), (7, 5), (13, 5)), ((10, 18), (7, 15), (13, 15)),
                            ((2, 10), (5, 7), (5, 13)), ((18, 10), (15, 7), (15, 13))):
            p.drawPolyline(QPolygonF([QPointF(*l1), QPointF(*tip), QPointF(*l2)]))
    elif kind == "select":  # arrow pointer
        p.setBrush(QColor(215, 220, 228))
        p.drawPolygon(QPolygonF([QPointF(5, 2), QPointF(5, 16), QPointF(9, 12), QPointF(12, 18),
                                 QPointF(14, 17), QPointF(11, 11), QPointF(16, 11)]))
    elif kind == "rectangle":
        p.drawRect(QRectF(3, 5, 14, 10))
    elif kind == "polygon":
        p.drawPolygon(QPolygonF([QPointF(3, 8), QPointF(9, 3), QPointF(17, 6), QPointF(15, 16), QPointF(6, 15)]))
    elif kind == "point":
        p.setBrush(QColor(215, 220, 228))
        p.drawEllipse(QPointF(10, 10), 3.5, 3.5)
    p.end()
    return QIcon(pixmap)
