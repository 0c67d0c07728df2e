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
    assert [a.text() for a in window.menuBar().actions()][:3] == ["&File", "&Edit", "&View"]
    window.close()
    app.processEvents()
    assert not window.isVisible()


def test_viewer_command_exits_cleanly(tmp_path):
    # Without a slide the viewer starts generating the demo slide; quitting must cancel that cleanly.
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO_ROOT), CERVIXFM_HOME=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "cervixfm_app.viewer.main", "--quit-after", "1500"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "cache" / "demo").glob("*.tiff")), "a cancelled demo left a file behind"


def test_viewer_command_opens_a_slide(tmp_path):
    from slide_fixtures import synthetic

    slide = synthetic(tmp_path, "cli.tiff", width=1024, height=1024, seed=1).path
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO_ROOT), CERVIXFM_HOME=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "cervixfm_app.viewer.main", str(slide), "--quit-after", "1500"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
