"""The viewer window opens and closes cleanly (offscreen)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests_support import REPO_ROOT

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def test_main_window_opens_and_closes():
    from PySide6.QtWidgets import QApplication

    from cervixfm_app.viewer.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    window = MainWindow()
    window.show()
    app.processEvents()
    assert window.isVisible() and window.windowTitle() == "CervixFM"
    assert [a.text() for a in window.menuBar().actions()] == ["&File", "&Help"]
    window.close()
    app.processEvents()
    assert not window.isVisible()


def test_viewer_command_exits_cleanly():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-m", "cervixfm_app.viewer.main", "--quit-after", "200"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
