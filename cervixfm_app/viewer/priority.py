"""CPU priority of the viewer's background work, without Qt: the analysis process imports it too."""

from __future__ import annotations

import os
import sys
import threading

#: Niceness added to background threads: the GUI thread keeps the CPU when readers, renderers and analyses want
#: more than the machine has (on one busy core, equal shares would leave the GUI a third of a frame's time).
BACKGROUND_NICE = 10


def lower_thread_priority(nice: int | None = None) -> None:
    """Lower the calling thread's CPU priority (Linux keeps a nice value per thread; elsewhere nothing happens).

    Threads the calling thread starts afterwards inherit it, so calling this first in an analysis thread also
    covers the compute threads its libraries create.
    """
    nice = BACKGROUND_NICE if nice is None else nice
    if not sys.platform.startswith("linux") or nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass


def yield_to_everything() -> str:
    """Make every thread of this process, and every thread it starts afterwards, run only when no other thread
    wants the CPU (Linux ``SCHED_IDLE``); elsewhere, or where that is refused, the lowest nice value instead.
    Returns which.

    For the analysis process: a niced thread still keeps a waking GUI thread waiting until the scheduler's next
    decision, up to tens of milliseconds on a busy two-core machine; the kernel preempts a ``SCHED_IDLE`` thread at
    once when a normal one wakes up. The analysis then takes exactly the CPU time the viewer leaves over. Threads
    that exist already (libraries start their pools when they are imported) are changed too: a new thread takes
    its policy from the thread that starts it, not from the process.
    """
    threads = _own_threads()
    if sys.platform.startswith("linux") and hasattr(os, "SCHED_IDLE"):
        try:
            for tid in threads:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return "idle"
        except OSError:
            pass
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
        except OSError:
            pass
    return "nice"


def _own_threads() -> list[int]:
    """This process's threads (Linux), the calling one first; elsewhere only the calling one (as ``0``)."""
    me = threading.get_native_id() if sys.platform.startswith("linux") else 0
    try:
        others = [int(t) for t in os.listdir("/proc/self/task") if int(t) != me]
    except OSError:
        others = []
    return [me, *others]
