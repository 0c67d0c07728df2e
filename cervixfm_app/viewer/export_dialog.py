"""File › Export Regions…: crops of the selected regions (or of the current view) at a chosen resolution, with the
objects inside them, written by ``core.annotations.export_regions`` on a worker thread.

A pathologist exports regions for a report, a teaching set or a training set; each use wants a different
resolution, and a whole-slide-sized region at full resolution is gigabytes. So the dialog shows what it is about
to write (how many crops, how many pixels) before anything happens, refuses sizes the exporter would refuse, keeps
the window responsive while it works, can be cancelled (nothing is left behind: the export folder appears whole
or not at all) and says where the result is.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QRadioButton, QVBoxLayout, QWidget)

from core.annotations import export_regions
from core.annotations.export import MAX_CROP_PIXELS
from core.errors import CervixFMError

from .workers import Mailbox, lower_thread_priority

log = logging.getLogger(__name__)

#: Objective magnifications offered (40x = 0.25 µm/px), when not finer than the scan.
MAGNIFICATIONS = (40, 20, 10, 5, 2.5)
FORMATS = (("PNG (lossless)", "png"), ("JPEG (small)", "jpg"), ("TIFF", "tif"))
SETTINGS_FOLDER = "export/regions_folder"


class _Cancelled(Exception):
    """Raised from the progress callback to stop the export (the exporter then removes its partial folder)."""


class RegionExportDialog(QDialog):
    """Choose regions, resolution, objects and a folder, then export in the background.

    ``regions``: the selected annotations that have an area; ``view_box``: the current view on the slide as
    level-0 (x, y, w, h), offered when there is no selection (or instead of it). Signals: ``exported(RegionExport)``,
    ``failed(message)``.
    """

    exported = Signal(object)
    failed = Signal(str)

    def __init__(self, slide, store, regions: list, view_box: tuple[float, float, float, float] | None,
                 settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export Regions")
        self.setMinimumWidth(480)
        self.slide = slide
        self.store = store
        self.regions = list(regions)
        self.view_box = view_box
        self.settings = settings
        self.result = None
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._drain)
        self._build()
        self._update_estimate()

    # ------------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        regions = QGroupBox("Regions")
        rbox = QVBoxLayout(regions)
        self.selection_radio = QRadioButton(self._selection_text())
        self.view_radio = QRadioButton(self._view_text())
        self._region_group = QButtonGroup(self)
        for button in (self.selection_radio, self.view_radio):
            self._region_group.addButton(button)
            rbox.addWidget(button)
        self.selection_radio.setEnabled(bool(self.regions))
        self.view_radio.setEnabled(self.view_box is not None)
        (self.selection_radio if self.regions else self.view_radio).setChecked(True)
        self._region_group.buttonToggled.connect(lambda *_: self._update_estimate())
        outer.addWidget(regions)

        options = QGroupBox("Output")
        form = QFormLayout(options)
        base = float(self.slide.mpp[0])
        self.resolution_combo = QComboBox()
        self.resolution_combo.addItem(f"Scan resolution — {base:.4g} µm/px ({10 / base:.3g}×)", base)
        for mag in MAGNIFICATIONS:
            mpp = 10.0 / mag
            if mpp > base * 1.0001:
                self.resolution_combo.addItem(f"{mag:g}× — {mpp:g} µm/px", mpp)
        self.resolution_combo.addItem("Custom…", None)
        self.custom_mpp = QDoubleSpinBox()
        self.custom_mpp.setDecimals(4)
        self.custom_mpp.setRange(base, 1000.0)
        self.custom_mpp.setSingleStep(0.25)
        self.custom_mpp.setSuffix(" µm/px")
        self.custom_mpp.setValue(base)
        self.custom_mpp.setEnabled(False)
        self.resolution_combo.currentIndexChanged.connect(self._resolution_changed)
        self.custom_mpp.valueChanged.connect(lambda *_: self._update_estimate())
        res_row = QHBoxLayout()
        res_row.addWidget(self.resolution_combo, 1)
        res_row.addWidget(self.custom_mpp)
        form.addRow("Resolution", res_row)
        self.format_combo = QComboBox()
        for label, ext in FORMATS:
            self.format_combo.addItem(label, ext)
        form.addRow("Image format", self.format_combo)
        self.objects_check = QCheckBox("Include the objects inside each region (GeoJSON + measurements.csv)")
        self.objects_check.setChecked(True)
        self.burn_check = QCheckBox("Also write each crop with the objects drawn on it")
        self.objects_check.toggled.connect(self.burn_check.setEnabled)
        form.addRow(self.objects_check)
        form.addRow(self.burn_check)
        folder_row = QHBoxLayout()
        self.folder_edit = QLineEdit(self._default_folder())
        self.folder_edit.setPlaceholderText("Folder the export folder is created in")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(browse)
        form.addRow("Save in", folder_row)
        outer.addWidget(options)

        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        outer.addWidget(self.estimate_label)
        self.progress = QProgressBar()
        self.progress.hide()
        outer.addWidget(self.progress)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.status_label)

        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.open_button = self.buttons.addButton("Open Folder", QDialogButtonBox.ButtonRole.ActionRole)
        self.open_button.hide()
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.export_button.clicked.connect(self.start)
        self.open_button.clicked.connect(self._open_folder)
        self.close_button.clicked.connect(self.reject)
        outer.addWidget(self.buttons)

    def _selection_text(self) -> str:
        n = len(self.regions)
        if not n:
            return "Selected regions (select rectangles or polygons first)"
        return f"Selected region{'s' if n != 1 else ''} ({n})"

    def _view_text(self) -> str:
        if self.view_box is None:
            return "Current view (not on the slide)"
        x, y, w, h = self.view_box
        return f"Current view ({w:,.0f} × {h:,.0f} px at {x:,.0f}, {y:,.0f})"

    def _default_folder(self) -> str:
        saved = self.settings.value(SETTINGS_FOLDER, "") if self.settings is not None else ""
        if saved:
            return str(saved)
        return str(Path(self.slide.path).parent)

    # ------------------------------------------------------------------------------------------------ choices
    def chosen_regions(self) -> list:
        if self.selection_radio.isChecked():
            return list(self.regions)
        return [self.view_box] if self.view_box is not None else []

    def chosen_mpp(self) -> float:
        value = self.resolution_combo.currentData()
        return float(self.custom_mpp.value() if value is None else value)

    def set_resolution(self, mpp: float) -> None:
        """Pick the entry for ``mpp`` µm/px, or the custom field when no entry has it."""
        for i in range(self.resolution_combo.count()):
            value = self.resolution_combo.itemData(i)
            if value is not None and math.isclose(value, mpp, rel_tol=1e-6):
                self.resolution_combo.setCurrentIndex(i)
                return
        self.resolution_combo.setCurrentIndex(self.resolution_combo.count() - 1)
        self.custom_mpp.setValue(mpp)

    def _resolution_changed(self, *_):
        custom = self.resolution_combo.currentData() is None
        self.custom_mpp.setEnabled(custom)
        self._update_estimate()

    def _crop_sizes(self) -> list[tuple[int, int]]:
        ds = self.chosen_mpp() / float(self.slide.mpp[0])
        sizes = []
        for region in self.chosen_regions():
            if isinstance(region, tuple):
                w0, h0 = region[2], region[3]
            else:
                x0, y0, x1, y1 = region.bounds
                w0, h0 = x1 - x0, y1 - y0
            sizes.append((max(1, round(w0 / ds)), max(1, round(h0 / ds))))
        return sizes

    def _update_estimate(self) -> None:
        sizes = self._crop_sizes()
        if not sizes:
            self.estimate_label.setText("Nothing to export: select rectangles or polygons, or use the current view.")
            self.export_button.setEnabled(False)
            return
        largest = max(sizes, key=lambda s: s[0] * s[1])
        total = sum(w * h for w, h in sizes)
        text = (f"{len(sizes)} crop{'s' if len(sizes) != 1 else ''}, largest {largest[0]:,} × {largest[1]:,} px, "
                f"{total / 1e6:.1f} megapixels in all.")
        too_big = largest[0] * largest[1] > MAX_CROP_PIXELS
        if too_big:
            text += (f" A crop may have at most {MAX_CROP_PIXELS // 1_000_000} megapixels: choose a coarser "
                     "resolution or smaller regions.")
        self.estimate_label.setText(text)
        self.estimate_label.setStyleSheet("color: #f0a020;" if too_big else "")
        self.export_button.setEnabled(not too_big and self._thread is None)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export regions into", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    # ------------------------------------------------------------------------------------------------- export
    def is_running(self) -> bool:
        return self._thread is not None

    def start(self) -> bool:
        """Begin the export in a worker thread; False (with the reason shown) if the choices cannot work."""
        if self._thread is not None:
            return False
        regions = self.chosen_regions()
        folder_text = self.folder_edit.text().strip()
        if not regions:
            self._show_status("Nothing to export.", error=True)
            return False
        if not folder_text:
            self._show_status("Choose the folder to save the export in.", error=True)
            return False
        folder = Path(folder_text).expanduser()
        if folder.exists() and not folder.is_dir():
            self._show_status(f"{folder} is a file, not a folder: choose a folder.", error=True)
            return False
        if self.settings is not None:
            self.settings.setValue(SETTINGS_FOLDER, str(folder))
        include = self.objects_check.isChecked()
        options = dict(objects=self.store.snapshot() if include else [], mpp=self.chosen_mpp(),
                       image_format=self.format_combo.currentData(), burn=include and self.burn_check.isChecked(),
                       qupath_offset=True)
        self._cancel.clear()
        self.result = None
        self.progress.setRange(0, len(regions))
        self.progress.setValue(0)
        self.progress.show()
        self.open_button.hide()
        self.export_button.setEnabled(False)
        self.close_button.setText("Cancel")
        self._show_status(f"Exporting {len(regions)} region{'s' if len(regions) != 1 else ''}…")
        slide, mail, cancel = self.slide, self._mail, self._cancel

        def progress(done: int, total: int) -> None:
            if cancel.is_set():
                raise _Cancelled
            mail.post(("progress", done, total))

        def work() -> None:
            lower_thread_priority()
            try:
                result = export_regions(slide, regions, folder, progress=progress, **options)
            except _Cancelled:
                mail.post(("cancelled", None))
            except CervixFMError as exc:
                mail.post(("failed", str(exc)))
            except OSError as exc:
                mail.post(("failed", f"Cannot write to {folder}: {exc.strerror or exc}. Choose another folder."))
            except Exception as exc:  # noqa: BLE001 - a bug must not take the viewer down; it is logged
                log.exception("region export failed")
                mail.post(("failed", f"The export failed ({type(exc).__name__}: {exc})."))
            else:
                mail.post(("done", result))

        self._thread = threading.Thread(target=work, name="region-export", daemon=True)
        self._thread.start()
        return True

    def cancel(self) -> None:
        """Stop after the region being written; the partial export folder is removed."""
        self._cancel.set()

    def _drain(self) -> None:
        for kind, *payload in self._mail.take():
            if kind == "progress":
                done, total = payload
                self.progress.setRange(0, total)
                self.progress.setValue(done)
                continue
            self._thread = None
            self.progress.hide()
            self.close_button.setText("Close")
            self._update_estimate()
            if kind == "done":
                self.result = result = payload[0]
                n = len(result.regions)
                text = (f"Exported {n} region{'s' if n != 1 else ''} with {result.objects:,} "
                        f"object{'s' if result.objects != 1 else ''} to {result.folder}")
                if result.warnings:
                    text += "\n" + "\n".join(result.warnings[:8])
                self._show_status(text)
                self.open_button.show()
                self.exported.emit(result)
            elif kind == "cancelled":
                self._show_status("Export cancelled; nothing was written.")
            else:
                self._show_status(payload[0], error=True)
                self.failed.emit(payload[0])

    def _show_status(self, text: str, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #f07070;" if error else "")

    def _open_folder(self) -> None:
        if self.result is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.result.folder)))

    def reject(self) -> None:
        if self._thread is not None:  # Cancel while running stops the export; the dialog stays to say so
            self.cancel()
            self._show_status("Cancelling…")
            return
        super().reject()
