"""The viewer's look: a dark, low-glare frame around the slide, as in reading-room software.

Colour judgement is the pathologist's job, so everything around the slide is neutral grey: no tinted panels next
to the stain, and enough contrast for labels without a bright frame pulling the eye away from the image.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QFrame, QScrollArea, QVBoxLayout, QWidget

STYLE_SHEET = """
QMainWindow::separator { background: #2a2d33; width: 3px; height: 3px; }
QDockWidget { color: #d7dae0; font-weight: 600; }
QDockWidget::title { background: #23262b; padding: 6px 8px; border-bottom: 1px solid #33373e; }
QFrame#layerRow { background: #2b2e34; border: 1px solid #363a41; border-radius: 4px; }
QStatusBar { background: #1d1f23; color: #b9bec7; border-top: 1px solid #33373e; }
QStatusBar QLabel { padding: 0 8px; }
QMenuBar { background: #23262b; color: #d7dae0; }
QMenuBar::item:selected { background: #3a3f47; }
QMenu { background: #2b2e34; color: #d7dae0; border: 1px solid #3a3f47; }
QMenu::item:selected { background: #3d5a80; }
QToolTip { background: #2b2e34; color: #e6e8ec; border: 1px solid #4a4f58; }
"""


def apply_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    p = QPalette()
    window, base, text = QColor(35, 38, 43), QColor(28, 30, 34), QColor(220, 223, 228)
    p.setColor(QPalette.ColorRole.Window, window)
    p.setColor(QPalette.ColorRole.WindowText, text)
    p.setColor(QPalette.ColorRole.Base, base)
    p.setColor(QPalette.ColorRole.AlternateBase, window)
    p.setColor(QPalette.ColorRole.Text, text)
    p.setColor(QPalette.ColorRole.Button, QColor(45, 48, 54))
    p.setColor(QPalette.ColorRole.ButtonText, text)
    p.setColor(QPalette.ColorRole.Highlight, QColor(61, 110, 170))
    p.setColor(QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
    p.setColor(QPalette.ColorRole.ToolTipBase, QColor(43, 46, 52))
    p.setColor(QPalette.ColorRole.ToolTipText, text)
    p.setColor(QPalette.ColorRole.PlaceholderText, QColor(130, 135, 145))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(110, 114, 122))
    app.setPalette(p)
    app.setStyleSheet(STYLE_SHEET)


def scrolling_panel(owner: QWidget, inner: QWidget) -> None:
    """Fill ``owner`` with ``inner`` in a frameless, vertically scrolling area: how the docks' panels keep their
    width and grow downwards."""
    outer = QVBoxLayout(owner)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    outer.addWidget(scroll)
