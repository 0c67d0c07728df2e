"""Guard against Qt bindings that corrupt the interpreter: PySide6 6.12.0 on Python < 3.12 returns None from void
methods without taking a reference, and the viewer aborts ("deallocating None") after a few thousand calls."""

from __future__ import annotations

import sys


def test_void_qt_calls_keep_none_alive(qapp):
    from PySide6.QtGui import QImage

    image = QImage(8, 8, QImage.Format.Format_RGB32)
    before = sys.getrefcount(None)
    for _ in range(2000):
        image.fill(0)
    lost = before - sys.getrefcount(None)
    assert lost < 100, (f"each void Qt call loses a reference to None ({lost} lost in 2000 calls): this PySide6 "
                        "build crashes long-running viewers; install another PySide6-Essentials release")
