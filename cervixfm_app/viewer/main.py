"""``cervixfm-viewer [SLIDE]``: start the desktop viewer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cervixfm-viewer", description="CervixFM desktop viewer")
    p.add_argument("slide", nargs="?", type=Path, help="slide to open (default: the demo slide)")
    p.add_argument("--quit-after", type=int, metavar="MS", help=argparse.SUPPRESS)  # smoke tests and CI
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from .main_window import APP_NAME, MainWindow
    from .style import apply_theme
    from .workers import tune_interpreter_for_gui

    tune_interpreter_for_gui()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    apply_theme(app)
    window = MainWindow(args.slide, open_demo=args.slide is None)
    window.show()
    if args.quit_after is not None:
        QTimer.singleShot(args.quit_after, window.close)
    try:
        return app.exec()
    finally:
        from .analysis_host import stop_analysis_host

        stop_analysis_host()  # while the interpreter is whole, not from an exit handler


if __name__ == "__main__":
    sys.exit(main())
