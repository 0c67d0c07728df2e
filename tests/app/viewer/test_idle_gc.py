"""Full garbage collections wait until the view is still; the interpreter settings the viewer starts with."""

from __future__ import annotations

import gc
import os

from PySide6.QtCore import QObject, Signal


class FakeView(QObject):
    viewChanged = Signal(object, float)


def test_full_collections_run_only_once_the_view_is_still(qtbot):
    from cervixfm_app.viewer.idle_gc import IdleCollector

    view = FakeView()
    collector = IdleCollector(view, quiet_s=0.4, every_s=0.0)
    for _ in range(12):  # 1.2 s of motion, a change every 100 ms: never still long enough
        view.viewChanged.emit(None, 1.0)
        qtbot.wait(100)
    assert collector.collections == 0
    qtbot.waitUntil(lambda: collector.collections >= 1, timeout=3000)  # still: it collects


def test_collecting_frees_reference_cycles():
    from cervixfm_app.viewer.idle_gc import IdleCollector

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    import weakref

    gone = weakref.ref(a)
    del a, b
    IdleCollector(FakeView()).collect()
    assert gone() is None


def test_gui_tuning_defers_full_collections_and_keeps_qt_painting_on_the_gui_thread(monkeypatch):
    import sys

    from cervixfm_app.viewer.workers import FULL_GC_THRESHOLD, SWITCH_INTERVAL_S, tune_interpreter_for_gui

    before = gc.get_threshold(), sys.getswitchinterval()
    monkeypatch.delenv("QT_NO_GUI_THREADPOOL", raising=False)
    try:
        tune_interpreter_for_gui()
        assert gc.get_threshold()[2] == FULL_GC_THRESHOLD and gc.get_threshold()[:2] == before[0][:2]
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
        assert os.environ["QT_NO_GUI_THREADPOOL"] == "1"
        monkeypatch.setenv("QT_NO_GUI_THREADPOOL", "0")  # a user's own setting wins
        tune_interpreter_for_gui()
        assert os.environ["QT_NO_GUI_THREADPOOL"] == "0"
    finally:
        gc.set_threshold(*before[0])
        sys.setswitchinterval(before[1])
