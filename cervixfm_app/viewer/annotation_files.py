"""File › Import Annotations…, Export Annotations…, Export Regions… and Save Snapshot… for the open slide.

Files meet the user's disk and other programs, so every one of these runs on a worker thread (a 100,000-cell GeoJSON
takes tens of seconds and the slide must stay usable), writes atomically, applies the slide's OpenSlide bounds offset
that QuPath measures from, and ends in a status line or a message that says what happened. A malformed file is a
message, and the store is left exactly as it was; an import is one undo step.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from pathlib import Path
from typing import Callable

import shapely
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject, QRectF, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox

from core.annotations import bounds_offset, new_id, read_geojson, write_geojson
from core.errors import CervixFMError
from core.io import atomic_write

from .export_dialog import RegionExportDialog
from .workers import Mailbox, lower_thread_priority

log = logging.getLogger(__name__)

GEOJSON_FILTER = "GeoJSON (*.geojson *.json);;All files (*)"
PNG_FILTER = "PNG image (*.png)"
SETTINGS_DIR = "annotations/last_folder"
#: Warnings listed in a message box; the rest are counted.
MAX_LISTED_WARNINGS = 15


class AnnotationFiles(QObject):
    """The file actions of ``AnnotationTools`` (``window.annotation_tools.files``), added to the File menu above
    Quit."""

    #: A background file job ended: (kind: "import" | "export" | "snapshot", succeeded, message).
    jobFinished = Signal(str, bool, str)

    def __init__(self, tools) -> None:
        super().__init__(tools)
        self.tools = tools
        self.window = w = tools.window
        self.view = tools.view
        self.region_dialog: RegionExportDialog | None = None
        self._busy: set[str] = set()
        self._jobs = Mailbox(self)
        self._jobs.arrived.connect(self._jobs_done)
        self.import_action = QAction("&Import Annotations…", w, triggered=self.choose_import)
        self.import_action.setStatusTip("Add objects from a QuPath GeoJSON file to this slide")
        self.export_action = QAction("&Export Annotations…", w, triggered=lambda: self.choose_export())
        self.export_action.setStatusTip("Write this slide's objects (or the selection) as QuPath GeoJSON")
        self.export_regions_action = QAction("Export Re&gions…", w, triggered=self.open_region_export)
        self.export_regions_action.setStatusTip("Save image crops of the selected regions or the current view, "
                                                "with their objects")
        self.snapshot_action = QAction("Save &Snapshot…", w, triggered=self.choose_snapshot)
        self.snapshot_action.setStatusTip("Save the view as shown, overlays included, as a PNG image")
        self.file_menu = _file_menu(w)
        before = _quit_separator(self.file_menu)  # Open…, Close, ---, [these], ---, Quit
        file_actions = [self.import_action, self.export_action, self.export_regions_action, self.snapshot_action]
        if before is not None:
            self.file_menu.insertSeparator(before)
            self.file_menu.insertActions(before, file_actions)
        else:
            self.file_menu.addSeparator()
            self.file_menu.addActions(file_actions)
        self.update_actions()

    @property
    def session(self):
        return self.tools.session

    def message(self, text: str, ms: int = 6000) -> None:
        self.tools.message(text, ms)

    def update_actions(self) -> None:
        have = self.session is not None
        self.import_action.setEnabled(have and "import" not in self._busy)
        self.export_action.setEnabled(have and "export" not in self._busy)
        self.export_regions_action.setEnabled(have)
        self.snapshot_action.setEnabled(have and "snapshot" not in self._busy)

    def session_changed(self) -> None:
        """A region dialog of the previous slide goes (unless it is still writing: it finishes on its own)."""
        if self.region_dialog is not None and not self.region_dialog.is_running():
            self.region_dialog.close()

    # ------------------------------------------------------------------------------------------------- jobs
    def _start_job(self, kind: str, status: str, work: Callable[[], object],
                   done: Callable[[object, str | None], str]) -> None:
        """Run ``work`` on a thread; ``done(result, error)`` runs on the GUI thread and returns a status text."""
        self._busy.add(kind)
        self.update_actions()
        self.message(status, 0)
        mail = self._jobs

        def run() -> None:
            lower_thread_priority()
            try:
                result, error = work(), None
            except CervixFMError as exc:
                result, error = None, str(exc)
            except OSError as exc:
                result, error = None, f"{getattr(exc, 'filename', None) or ''} {exc.strerror or exc}".strip()
            except Exception as exc:  # noqa: BLE001 - a bug must not take the viewer down; it is logged
                log.exception("%s failed", kind)
                result, error = None, f"{type(exc).__name__}: {exc}"
            mail.post((kind, done, result, error))

        threading.Thread(target=run, name=f"annotations-{kind}", daemon=True).start()

    def _jobs_done(self) -> None:
        for kind, done, result, error in self._jobs.take():
            self._busy.discard(kind)
            try:
                text = done(result, error)
            finally:
                self.update_actions()
            self.jobFinished.emit(kind, error is None, text or error or "")

    def _last_folder(self) -> str:
        saved = self.window.settings.value(SETTINGS_DIR, "")
        if saved:
            return str(saved)
        return str(self.session.slide_path.parent) if self.session is not None else ""

    def _remember_folder(self, path: Path) -> None:
        self.window.settings.setValue(SETTINGS_DIR, str(path.parent))

    # import
    def choose_import(self) -> None:
        if self.session is None:
            return
        path, _ = QFileDialog.getOpenFileName(self.window, "Import annotations (QuPath GeoJSON)", self._last_folder(),
                                              GEOJSON_FILTER)
        if path:
            self.import_annotations(path)

    def import_annotations(self, path) -> None:
        """Read a QuPath GeoJSON file (bounds offset of this slide applied) and add its objects as one undo step."""
        session = self.session
        if session is None:
            return
        path = Path(path)
        self._remember_folder(path)
        offset = bounds_offset(session.slide)
        self._start_job("import", f"Importing {path.name}…", lambda: read_geojson(path, offset=offset),
                        partial(self._imported, session, path))

    def _imported(self, session, path: Path, report, error: str | None) -> str:
        if error is not None:
            self.window.show_error("Import annotations", f"Nothing was imported. {error}")
            return error
        if session is not self.session:
            text = f"{path.name} was not imported: the slide was closed meanwhile."
            self.message(text)
            return text
        store = session.store
        fresh, skipped, renamed, seen = [], 0, 0, set()
        for a in report.annotations:
            if a.id in store or a.id in seen:
                if a.id in store and store.get(a.id) == a:
                    skipped += 1
                    continue
                a = a.replace(id=new_id())
                renamed += 1
            seen.add(a.id)
            fresh.append(a)
        if fresh:
            store.add(fresh, label=f"Import {path.name}")
        text = f"Imported {len(fresh):,} object{'s' if len(fresh) != 1 else ''} from {path.name}"
        if skipped:
            text += f"; {skipped:,} already on this slide were skipped"
        if renamed:
            text += f"; {renamed:,} with ids already in use were given new ids"
        text += "."
        self.message(text, 10000)
        if report.warnings:
            _warn(self.window, "Import annotations", text, report.warnings)
        elif not report.annotations:
            QMessageBox.information(self.window, "Import annotations", f"{path.name} contains no objects.")
        return text

    # export
    def choose_export(self, selection_only: bool | None = None) -> None:
        if self.session is None:
            return
        if selection_only is None:
            selection_only = False
            if self.tools.selection:
                question = QMessageBox(QMessageBox.Icon.Question, "Export annotations", "Export which objects?",
                                   parent=self.window)
                sel = question.addButton(f"Selected ({len(self.tools.selection)})", QMessageBox.ButtonRole.AcceptRole)
                question.addButton(f"All ({len(self.session.store):,})", QMessageBox.ButtonRole.AcceptRole)
                cancel = question.addButton(QMessageBox.StandardButton.Cancel)
                question.exec()
                if question.clickedButton() is cancel:
                    return
                selection_only = question.clickedButton() is sel
        default = str(Path(self._last_folder()) / f"{self.session.slide_path.stem}.geojson")
        path, _ = QFileDialog.getSaveFileName(self.window, "Export annotations (QuPath GeoJSON)", default,
                                              GEOJSON_FILTER)
        if path:
            self.export_annotations(path, selection_only=selection_only)

    def export_annotations(self, path, selection_only: bool = False) -> None:
        """Write the objects (or the selection) as QuPath GeoJSON, minus this slide's bounds offset."""
        session = self.session
        if session is None:
            return
        objs = self.tools.selected_objects() if selection_only else session.store.snapshot()
        if not objs:
            self.message("Nothing to export: this slide has no objects" + (" selected." if selection_only else "."))
            return
        path = Path(path)
        if path.suffix.lower() not in (".geojson", ".json"):
            path = path.with_name(path.name + ".geojson")
        self._remember_folder(path)
        offset = bounds_offset(session.slide)
        self._start_job("export", f"Exporting {len(objs):,} objects to {path.name}…",
                        lambda: write_geojson(path, objs, offset=offset), partial(self._exported, path))

    def _exported(self, path: Path, report, error: str | None) -> str:
        if error is not None:
            self.window.show_error("Export annotations", f"The annotations were not exported. {error}")
            return error
        text = f"Exported {report.written:,} object{'s' if report.written != 1 else ''} to {path}"
        self.message(text, 10000)
        if report.warnings:
            _warn(self.window, "Export annotations", text, report.warnings)
        return text

    # snapshot
    def choose_snapshot(self) -> None:
        if self.session is None:
            return
        default = str(Path(self._last_folder()) / f"{self.session.slide_path.stem}_snapshot.png")
        path, _ = QFileDialog.getSaveFileName(self.window, "Save snapshot", default, PNG_FILTER)
        if path:
            self.save_snapshot(path)

    def save_snapshot(self, path) -> None:
        """The view as shown (slide, overlays, scale bar) as a PNG; encoded and written atomically off the GUI
        thread."""
        if self.view.source is None:
            return
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_name(path.name + ".png")
        self._remember_folder(path)
        image = self.view.grab().toImage()

        def work():
            data = QByteArray()
            buffer = QBuffer(data)
            buffer.open(QIODevice.OpenModeFlag.WriteOnly)
            if not image.save(buffer, "PNG"):
                raise CervixFMError(f"The snapshot could not be encoded as PNG ({image.width()} x "
                                    f"{image.height()} px).")
            buffer.close()
            with atomic_write(path, "wb") as fh:
                fh.write(bytes(data))
            return image.width(), image.height()

        self._start_job("snapshot", f"Saving snapshot {path.name}…", work, partial(self._snapshot_saved, path))

    def _snapshot_saved(self, path: Path, size, error: str | None) -> str:
        if error is not None:
            self.window.show_error("Save snapshot", f"The snapshot was not saved. {error}")
            return error
        text = f"Snapshot saved: {path} ({size[0]} × {size[1]} px)"
        self.message(text, 10000)
        return text

    # regions
    def open_region_export(self) -> RegionExportDialog | None:
        """The Export Regions dialog for the selected rectangles/polygons, or the current view when none."""
        session = self.session
        if session is None:
            return None
        if self.region_dialog is not None and self.region_dialog.is_running():
            self.region_dialog.raise_()
            return self.region_dialog
        regions = [a for a in self.tools.selected_objects() if shapely.get_dimensions(a.geometry) == 2]
        w, h = self.tools.slide_size()
        r = self.view.visible_rect().intersected(QRectF(0, 0, w, h))
        view_box = None if r.isEmpty() else (r.left(), r.top(), r.width(), r.height())
        dialog = RegionExportDialog(session.slide, session.store, regions, view_box, settings=self.window.settings,
                                    parent=self.window)
        dialog.exported.connect(lambda result: self.message(f"Regions exported to {result.folder}", 15000))
        if self.region_dialog is not None:
            self.region_dialog.deleteLater()
        self.region_dialog = dialog
        dialog.show()
        return dialog


# --------------------------------------------------------------------------------------------------- helpers
def _warn(parent, title: str, summary: str, warnings: list[str]) -> None:
    listed = "\n".join(f"• {w}" for w in warnings[:MAX_LISTED_WARNINGS])
    more = len(warnings) - MAX_LISTED_WARNINGS
    if more > 0:
        listed += f"\n… and {more} more"
    QMessageBox.warning(parent, title, f"{summary}\n\n{len(warnings)} problem(s) were found and handled:\n{listed}")


def _file_menu(window) -> QMenu:
    for action in window.menuBar().actions():
        if action.menu() is not None and action.text().replace("&", "") == "File":
            return action.menu()
    return window.menuBar().addMenu("&File")


def _quit_separator(menu: QMenu) -> QAction | None:
    """The separator just above File › Quit (where file-level actions go), else Quit itself."""
    actions = menu.actions()
    for i, action in enumerate(actions):
        if action.text().replace("&", "") == "Quit":
            return actions[i - 1] if i > 0 and actions[i - 1].isSeparator() else action
    return None
