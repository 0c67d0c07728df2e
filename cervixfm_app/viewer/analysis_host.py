"""The viewer's side of the analysis process (``analysis_worker``): starts it, sends it runs, routes its replies.

One process serves every window of the viewer, started at the first analysis (its start, about two seconds to
import torch, overlaps the model loading the first run needs anyway) and kept, with its loaded model, for the next
one. Replies arrive on one dispatcher thread and go to each run's queue; ``RemoteRun.next()`` hands them to the
thread that follows the run. If the process dies (killed, out of memory), every run still open gets a ``failed``
reply saying so, and the next run starts a new process.

Nothing here imports Qt.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import queue
import threading

log = logging.getLogger(__name__)

#: How long stopping waits for the process to end (runs are cancelled first; a batch takes about a second)
STOP_WAIT_S = 5.0


class RemoteRun:
    """One run in the analysis process, as its follower thread sees it."""

    def __init__(self, host: "AnalysisHost", run_id: int, process) -> None:
        self.host = host
        self.run_id = run_id
        self.process = process  # the process that runs it: if that one dies, this run has failed
        self.replies: queue.Queue = queue.Queue()

    def next(self, timeout: float | None = None) -> tuple[str, object]:
        """The next ``(kind, payload)`` of this run; blocks until it comes."""
        return self.replies.get(timeout=timeout)

    def cancel(self) -> None:
        self.host._send(("cancel", self.run_id))

    def prioritise_region(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.host._send(("prioritise", self.run_id, (x0, y0, x1, y1)))


class AnalysisHost:
    def __init__(self, idle: bool = True) -> None:
        """``idle``: the process runs only on CPU time nothing else wants (see ``priority.yield_to_everything``);
        False: it is niced like the viewer's other background threads."""
        self._idle = idle
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._runs: dict[int, RemoteRun] = {}
        self._process = None
        self._conn = None

    # ------------------------------------------------------------------------------------------- public
    def submit(self, request) -> RemoteRun:
        with self._lock:
            self._ensure_started()
            run = RemoteRun(self, next(self._ids), self._process)
            self._runs[run.run_id] = run
            self._conn.send(("run", run.run_id, request))
        return run

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        """Cancel what runs, let the process end (its journals are written batch by batch, so a run stopped
        here resumes later), and end it by force if it does not."""
        with self._lock:
            process, conn = self._process, self._conn
            self._process = self._conn = None
            if process is None:
                return
            try:
                conn.send(("stop",))
            except (OSError, EOFError):
                pass
        # The process's sentinel closes when it ends. ``join``/``is_alive`` are not enough: they ask waitpid, and
        # when something else in the viewer's process has already reaped the child (a SIGCHLD handler), they
        # report it alive forever.
        if multiprocessing.connection.wait([process.sentinel], timeout):
            process.join(0.5)
        else:
            log.warning("the analysis process did not stop within %.0f s; ending it", timeout)
            process.terminate()
            process.join(2.0)
        conn.close()

    # ------------------------------------------------------------------------------------------ private
    def _ensure_started(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        from .analysis_worker import serve

        # spawn, not fork: a forked copy of the GUI process would inherit Qt's threads and locks mid-use
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=serve, args=(child, self._idle), name="cervixfm-analysis", daemon=True)
        process.start()
        child.close()
        self._process, self._conn = process, parent
        threading.Thread(target=self._dispatch, args=(process, parent), name="analysis-replies",
                         daemon=True).start()

    def _send(self, command: tuple) -> None:
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.send(command)
            except (OSError, EOFError):
                pass  # the process is gone; the dispatcher reports it to the runs

    def _dispatch(self, process, conn) -> None:
        while True:
            try:
                kind, run_id, payload = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # a reply that cannot be unpickled: its run fails, the others go on
                log.error("unreadable reply from the analysis process: %s", exc)
                continue
            run = self._runs.get(run_id)
            if run is None:
                continue
            if kind in ("end", "failed"):
                self._runs.pop(run_id, None)
            run.replies.put((kind, payload))
        process.join(1.0)
        with self._lock:
            if self._process is process:
                self._process = self._conn = None
        code = process.exitcode
        for run in [r for r in list(self._runs.values()) if r.process is process]:
            self._runs.pop(run.run_id, None)
            run.replies.put(("failed", (False, f"The analysis process ended unexpectedly (exit code {code}). "
                                               "The results of the finished batches are kept; analysing again "
                                               "continues from there.")))


_HOST: AnalysisHost | None = None


def analysis_host() -> AnalysisHost:
    """The viewer's one analysis process (started at its first run, stopped when the viewer exits)."""
    global _HOST
    if _HOST is None:
        _HOST = AnalysisHost()
        atexit.register(_HOST.stop)  # a safety net: ``cervixfm-viewer`` stops it when its event loop ends
    return _HOST


def stop_analysis_host() -> None:
    """Stop the viewer's analysis process, if one was started (a no-op later, so the exit handler does nothing)."""
    if _HOST is not None:
        _HOST.stop()
