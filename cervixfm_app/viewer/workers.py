"""Background threads for the viewer: prioritised jobs whose stale requests die in the queue, and a mailbox that
hands results to the GUI thread in batches.

A view that moves asks for a new set of tiles many times a second. Queuing every request would make the readers
work through tiles the user has already scrolled past, so each ``submit`` replaces everything its owner still had
waiting (a job already running finishes, and its result is cached for later). Results reach the GUI thread through
a ``Mailbox``: one queued signal per batch, however many tiles arrived meanwhile, so a burst of tiles costs one
repaint instead of one event each.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import logging
import os
import sys
import threading
from typing import Callable, Hashable, Iterable

from PySide6.QtCore import QObject, Qt, Signal

from .priority import lower_thread_priority  # noqa: F401  (the panels import it from here)

log = logging.getLogger(__name__)

Job = tuple[float, Hashable, Callable[[], None]]  # (priority: lower runs first, key, work)

#: GIL hand-over interval for the viewer process. Python's default (5 ms) lets a reader thread in pure-Python code
#: keep the GUI thread waiting up to 5 ms at every return from a Qt call; 1 ms bounds that wait.
SWITCH_INTERVAL_S = 0.001
#: Automatic full (generation 2) garbage collections are put off this many younger ones: in effect never, since
#: ``idle_gc.IdleCollector`` runs them while the view is still. A full collection walks every object the viewer
#: holds (tile caches, spatial indexes of 100,000 cells) and took 40-130 ms on the GUI thread, a visible stall.
FULL_GC_THRESHOLD = 1_000_000


def tune_interpreter_for_gui() -> None:
    """Called once at viewer start-up, before the ``QApplication`` exists (and by the viewer benchmark and the
    screenshot scripts, to measure and show what users get).

    - GIL switch interval 1 ms (``SWITCH_INTERVAL_S``).
    - No full garbage collections while the user works (``FULL_GC_THRESHOLD``; ``IdleCollector`` does them).
    - ``QT_NO_GUI_THREADPOOL``: Qt's raster engine otherwise splits every large image draw and fill over a thread
      pool and makes the GUI thread wait for it; when the viewer's own readers and an analysis keep the cores
      busy, those helpers wait for a CPU and the GUI waits with them. Drawing on the GUI thread alone cut its
      time waiting for a CPU from 13-18% to 4% of a pan/zoom tour and the p95 frame time from ~23 to ~18 ms
      (``benchmarks/viewer.py``, 2 cores). A value the user set is kept.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_THRESHOLD)
    os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")


class JobQueue:
    """A fixed pool of daemon threads running jobs by priority; each owner's pending jobs are replaced as a whole
    by its next ``submit``. ``running(owner)`` tells which keys are being worked on, so an owner does not ask for
    them again."""

    def __init__(self, threads: int = 2, name: str = "viewer") -> None:
        self._cv = threading.Condition()
        self._heap: list = []
        self._seq = itertools.count()
        self._generation: dict[int, int] = {}
        self._running: dict[int, set] = {}
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, owner: object, jobs: Iterable[Job]) -> None:
        oid = id(owner)
        with self._cv:
            if self._closed:
                return
            gen = self._generation.get(oid, 0) + 1
            self._generation[oid] = gen
            busy = self._running.get(oid, ())
            added = 0
            for priority, key, fn in jobs:
                if key in busy:
                    continue
                heapq.heappush(self._heap, (priority, next(self._seq), oid, gen, key, fn))
                added += 1
            if len(self._heap) > 4 * added + 256:  # drop dead entries so the heap does not grow without bound
                self._heap = [e for e in self._heap if self._generation.get(e[2]) == e[3]]
                heapq.heapify(self._heap)
            self._cv.notify_all()

    def cancel(self, owner: object) -> None:
        """Forget everything ``owner`` still has waiting."""
        with self._cv:
            oid = id(owner)
            self._generation[oid] = self._generation.get(oid, 0) + 1

    def running(self, owner: object) -> frozenset:
        with self._cv:
            return frozenset(self._running.get(id(owner), ()))

    def pending(self) -> int:
        with self._cv:
            return sum(1 for e in self._heap if self._generation.get(e[2]) == e[3])

    def idle(self) -> bool:
        with self._cv:
            return not any(self._running.values()) and not any(
                self._generation.get(e[2]) == e[3] for e in self._heap)

    def _loop(self) -> None:
        lower_thread_priority()
        while True:
            with self._cv:
                while True:
                    if self._closed:
                        return
                    job = None
                    while self._heap:
                        entry = heapq.heappop(self._heap)
                        if self._generation.get(entry[2]) == entry[3]:
                            job = entry
                            break
                    if job is not None:
                        break
                    self._cv.wait()
                _, _, oid, _, key, fn = job
                self._running.setdefault(oid, set()).add(key)
            try:
                fn()
            except Exception:  # noqa: BLE001 - a failing job must not kill the reader thread
                log.exception("background job %r failed", key)
            finally:
                with self._cv:
                    self._running.get(oid, set()).discard(key)
                    self._cv.notify_all()

    def shutdown(self, timeout: float = 2.0) -> bool:
        """Stop taking jobs and wait (bounded) for the running ones, so a slide is not closed under a reader;
        True when every thread has stopped."""
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        return not any(t.is_alive() for t in self._threads if t is not threading.current_thread())


class Mailbox(QObject):
    """Thread-safe inbox whose ``arrived`` signal fires in the GUI thread once per batch of ``post`` calls."""

    arrived = Signal()
    _poke = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._items: list = []
        self._signalled = False
        self._poke.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def post(self, item) -> None:
        with self._lock:
            self._items.append(item)
            if self._signalled:
                return
            self._signalled = True
        try:
            self._poke.emit()
        except RuntimeError:  # the receiver was deleted (window closed) while a worker finished
            pass

    def _deliver(self) -> None:
        self.arrived.emit()

    def take(self) -> list:
        with self._lock:
            items, self._items = self._items, []
            self._signalled = False
        return items
