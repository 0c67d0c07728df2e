"""The viewer's main window: menus, central area, status bar."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox

from core import __version__

APP_NAME = "CervixFM"


class MainWindow(QMainWindow):
    def __init__(self, slide_path: Path | None = None):
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.resize(1280, 800)
        self._placeholder = QLabel("Open a slide with File › Open", alignment=Qt.AlignmentFlag.AlignCenter)
        self.setCentralWidget(self._placeholder)
        self._build_menus()
        self.statusBar().showMessage(f"{APP_NAME} {__version__}")
        self.slide_path = slide_path

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close)
        file_menu.addAction(quit_action)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(QAction("&About CervixFM", self, triggered=self._about))

    def _about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"{APP_NAME} {__version__}\nAI-assisted cervical cytology review.")
