"""The analysis process: runs the viewer's analyses away from the GUI's interpreter.

An analysis in a thread of the viewer shares the GUI thread's interpreter lock and its process's CPU priority
with the backbone, the tile readers and their library thread pools; on a two-core machine the GUI thread then waits
for a CPU often enough to stall the view for 50-90 ms at a time. In a process of its own, lowered in priority
before any thread exists (so its compute threads inherit it), the analysis takes only the CPU the GUI leaves.

``serve`` is the process's main function. It answers these commands from ``analysis_host.AnalysisHost``:
``("run", run_id, RunRequest)``, ``("cancel", run_id)``, ``("prioritise", run_id, region)`` and ``("stop",)``;
and sends, per run, ``("plan", run_id, RunPlan)`` before the first tile, ``("progress", run_id, Progress)`` per
batch, ``("tiles", run_id, SlideResult)`` when the tile stage ends, ``("cells_progress", run_id, CellProgress)``,
and finally ``("end", run_id, SlideResult)`` or ``("failed", run_id, (is_user_error, message))``. Everything sent
is plain data (arrays, dataclasses); the GUI side builds its overlays from it. Runs go one at a time: a new run
waits for the previous one, which the GUI has cancelled by then.

Nothing here imports Qt.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import CervixFMError
from core.models.bundle import MANIFEST

from .analysis_run import RunRequest, TileHead, analysis_root, earlier_tile_outputs, tile_heads_of_model
from .priority import lower_thread_priority, yield_to_everything

log = logging.getLogger(__name__)


def default_loader(folder: Path):
    from core.pipeline.analysis_model import model_from_bundle

    return model_from_bundle(folder)


class ModelCache:
    """The last bundle's loaded model, kept between runs: loading a ViT-L takes seconds and a gigabyte, and a
    pathologist analyses slide after slide with the same bundle. One model at a time bounds the memory."""

    def __init__(self) -> None:
        self._key = None
        self._model = None

    def get(self, folder: str | Path, loader: Callable | None = None):
        folder = Path(folder)
        loader = loader or default_loader
        try:
            st = (folder / MANIFEST).stat()
        except OSError as exc:
            raise CervixFMError(f"Model bundle {folder} is no longer readable ({exc.strerror}). Choose it again "
                                "with Analysis › Model Bundle….") from exc
        key = (str(folder.resolve()), st.st_mtime_ns, st.st_size, repr(loader))
        if self._key != key:
            self._key, self._model = None, None  # free the old model before the new one is loaded
            self._model = loader(folder)
            self._key = key
        return self._model


@dataclasses.dataclass
class RunPlan:
    """What the GUI needs before the first tile: the tile grid, the heads that make layers, earlier results."""

    folder: Path
    model_name: str
    boxes: np.ndarray  # (N, 4) level-0 x, y, w, h of the planned tiles
    tile_heads: list[TileHead]
    slide_heads: list[str]  # heads with ABMIL attention
    earlier: dict[str, np.ndarray] | None  # tile outputs of earlier runs, with "grid_index"
    cells: bool
    cell_classes: list[str] | None = None
    cell_colors: list | None = None
    cell_head: str | None = None


class WorkerRun:
    """One analysis inside the analysis process."""

    def __init__(self, run_id: int, request: RunRequest, models: ModelCache, send: Callable[[tuple], None]) -> None:
        self.run_id = run_id
        self.request = request
        self.models = models
        self._send = send
        self.analysis = None
        self._classifier = None
        self._cancelled = threading.Event()
        self._region = request.region

    def cancel(self) -> None:
        self._cancelled.set()
        if self.analysis is not None:
            self.analysis.cancel()

    def prioritise_region(self, region) -> None:
        if self.analysis is not None:
            self.analysis.prioritise_region(*region)
        else:
            self._region = tuple(region)

    def execute(self) -> None:
        try:
            result = self._execute()
        except CervixFMError as exc:
            self._post("failed", (True, str(exc)))
        except Exception as exc:  # a bug reaches the user as a message, not as a silent end
            log.error("analysis failed:\n%s", traceback.format_exc())
            self._post("failed", (False, f"{type(exc).__name__}: {exc}"))
        else:
            self._post("end", result)

    def _post(self, kind: str, payload) -> None:
        self._send((kind, self.run_id, payload))

    def _execute(self):
        from core.pipeline.analyze import SlideAnalysis, default_readers

        req = self.request
        model = self.models.get(req.bundle, req.loader)
        cells = None
        if req.cells:
            from core.cells import CellOptions

            cells = CellOptions(batch_size=req.batch_size, readers=req.readers or default_readers(model.device))
        out_root = req.out_root if req.out_root is not None else analysis_root(req.slide_path, req.bundle)
        analysis = SlideAnalysis(req.slide_path, model, out_root,
                                 batch_size=req.batch_size, readers=req.readers, mpp=req.mpp, cells=cells,
                                 region=req.region)
        self.analysis = analysis
        if self._region is not None:
            analysis.prioritise_region(*self._region)
        if self._cancelled.is_set():
            analysis.cancel()
        self._post("plan", self._plan(model, analysis))
        return analysis.run(self._on_progress, cell_progress=self._on_cells,
                            tiles_finished=lambda result: self._post("tiles", result))

    def _plan(self, model, analysis) -> RunPlan:
        plan = RunPlan(analysis.folder, model.name, analysis.boxes, tile_heads_of_model(model),
                       [h.spec.name for h in model.heads_with_role("slide")], earlier_tile_outputs(analysis),
                       self.request.cells)
        if self.request.cells:
            clf = self._cell_classifier(model)
            if clf is not None:
                plan.cell_classes, plan.cell_colors, plan.cell_head = list(clf.classes), clf.colors, clf.name
        return plan

    def _cell_classifier(self, model):
        """The first cell classifier, which colours the live cells (the final table has every head's outputs)."""
        if self._classifier is None:
            from core.cells.classify import classifiers_of_model

            try:
                found = classifiers_of_model(model)
            except CervixFMError as exc:  # the cell stage reports it; cells are drawn unclassified meanwhile
                log.warning("cell classes not shown live: %s", exc)
                found = []
            self._classifier = found[0] if found else False
        return self._classifier or None

    def _on_progress(self, p) -> None:
        self._post("progress", dataclasses.replace(p, batch_outputs=dict(p.batch_outputs)))

    def _on_cells(self, p) -> None:
        """Cells of the tiles just finished, classified here (the model is here) and sent without their
        embeddings, which the GUI does not draw."""
        table = p.new_cells
        clf = self._cell_classifier(self.analysis.model)
        if clf is not None and len(table) and table.embeddings is not None:
            table.heads[clf.name] = clf.outputs(table.embeddings)
        self._post("cells_progress", dataclasses.replace(p, new_cells=dataclasses.replace(table, embeddings=None)))


def _exit_now() -> None:
    """End the process at once. Every run has ended and written its results; an ordinary interpreter exit would
    also tear down the libraries' thread pools (OpenMP, the slide readers), and that sometimes hung for more than
    ten seconds in a process whose threads run only on idle CPU time."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(0)


def serve(conn, idle: bool = True) -> None:
    """The analysis process's main function: lower its priority first (threads started later inherit it), then
    answer commands until told to stop or the viewer goes away. Each run has its own thread, which waits for the
    run before it, so commands (a cancel above all) are answered while a run is busy."""
    if idle:
        yield_to_everything()
    else:
        lower_thread_priority()
    models = ModelCache()
    send_lock = threading.Lock()
    runs: dict[int, WorkerRun] = {}
    last: threading.Thread | None = None

    def send(message: tuple) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (OSError, EOFError):
                pass  # the viewer is gone; the command loop notices and cancels the runs

    def execute(run: WorkerRun, before: threading.Thread | None) -> None:
        if before is not None:
            before.join()
        try:
            run.execute()
        finally:
            runs.pop(run.run_id, None)

    while True:
        try:
            command = conn.recv()
        except (EOFError, OSError):
            command = ("stop",)
        kind = command[0]
        if kind == "stop":
            for run in list(runs.values()):
                run.cancel()
            if last is not None:
                last.join()
            _exit_now()
        if kind == "run":
            _, run_id, request = command
            run = runs[run_id] = WorkerRun(run_id, request, models, send)
            last = threading.Thread(target=execute, args=(run, last), name=f"analysis-{run_id}", daemon=True)
            last.start()
            continue
        run = runs.get(command[1])
        if run is None:
            continue
        if kind == "cancel":
            run.cancel()
        elif kind == "prioritise":
            run.prioritise_region(command[2])
