"""The cell stage of a slide analysis: find every cell, embed a crop centred on it, classify it, rank it.

It follows the tile stage in the same result folder and with the same ``AnalysisModel``:

    localisation tiles (cell-bearing area, read with a margin)  --reader threads-->  detector + border rule + crops
        --> batches of crops --> backbone (CLS) --> journal part per group of tiles
        --> cells.h5 (outlines, measurements, crop boxes, embeddings, class probabilities)
            cells.geojson (QuPath cells), cells.csv, cells_ranked.csv, and a ``cells`` record in result.json

Reading and localisation run in reader threads (scikit-image and numpy release the GIL for most of their work), the
backbone in the calling thread, so localisation overlaps with embedding. The stage is resumable like the tile stage
(finished tiles are journalled; a killed run continues where it stopped), re-runnable (a complete stage with the
same model, detector and heads is reused), cancellable, and honours region priorities from the viewer. With
``region`` it covers only the tiles of one level-0 rectangle (status "partial"; the journal stays, so a run of the
whole slide continues from it). Without a model it only localises (fast overlays, benchmarks).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CervixFMError
from ..pipeline.scheduler import TileScheduler, tiles_in_region
from ..slides import ForegroundMask, Slide, detect_foreground, open_slide
from .cell import CellDetector
from .classify import CellClassifier, classifiers_of_model, rank, ranked_lists
from .crops import crop_box, crops_for
from .export import cell_ids, write_csv, write_geojson
from .index import INDEX_DIR, write_slide_index
from .journal import CellJournal
from .localise import ClassicalCellDetector
from .merge import LocalisationTiles, drop_duplicates
from .summary import cell_slide_summary
from .table import CELLS_FILE, CellTable, load_cells, save_cells

log = logging.getLogger(__name__)

CELL_WORK_DIR = ".cells-work"
GEOJSON_FILE = "cells.geojson"
CSV_FILE = "cells.csv"
RANKED_FILE = "cells_ranked.csv"
#: Finished tiles are journalled at the latest after this many, even when they hold few cells.
MAX_PENDING_TILES = 8


@dataclasses.dataclass(frozen=True)
class CellOptions:
    #: MPP the detector sees. Equal to the model's MPP (0.5 by default) lets crops be cut from tiles in memory.
    detect_mpp: float | None = None
    #: Side of a localisation tile's core in pixels at ``detect_mpp`` (read with a margin on every side).
    core_px: int = 1024
    batch_size: int = 32
    readers: int = 2
    #: Class probability / abnormality from which a cell counts in the slide summary.
    threshold: float = 0.5
    #: Cells kept per ranked list in result.json (cells_ranked.csv has all of them).
    top_k: int = 100
    #: The slide summary's "top-k mean abnormality".
    summary_top_k: int = 10
    normal_classes: tuple[str, ...] | None = None
    exports: bool = True  # cells.geojson, cells.csv, cells_ranked.csv
    #: Build the slide's similar-cell index (``<folder>/cell_index``, ``core.retrieval``) from the embeddings.
    index: bool = True


@dataclasses.dataclass
class CellProgress:
    tiles_done: int
    tiles_total: int
    cells: int  # found so far, this run and earlier runs of the journal
    rate: float  # cells per second in this run
    eta_s: float | None
    new_cells: CellTable  # the cells of the tiles just finished (for a viewer drawing them as they come)


@dataclasses.dataclass
class CellResult:
    folder: Path
    status: str  # "complete", "cancelled" or "partial" (a region only)
    table: CellTable  # without embeddings when an earlier run was reused (``load_cells(folder)`` reads them)
    record: dict[str, Any]  # what result.json holds under "cells"

    def __len__(self) -> int:
        return len(self.table)


class CellAnalysis:
    def __init__(
        self,
        slide: str | Path | Slide,
        folder: str | Path,
        model=None,
        detector: CellDetector | None = None,
        options: CellOptions | None = None,
        foreground: ForegroundMask | None = None,
        classifiers: Sequence[CellClassifier] | None = None,
        slide_scores: dict | None = None,
        mpp: float | tuple[float, float] | None = None,
        slide_key: str | None = None,
        region: tuple[float, float, float, float] | None = None,
    ):
        """``region``: level-0 (x0, y0, x1, y1); only the localisation tiles meeting it are analysed."""
        self.slide = slide if isinstance(slide, Slide) else open_slide(slide, mpp=mpp)
        self.folder = Path(folder)
        self.model = model
        self.detector = detector or ClassicalCellDetector()
        self.options = opts = options or CellOptions()
        if opts.batch_size < 1 or opts.readers < 1:
            raise CervixFMError("Cell analysis: batch size and reader count must be at least 1.")
        self.crop_mpp = float(model.target_mpp) if model is not None else float(opts.detect_mpp or 0.5)
        self.crop_size = int(model.tile_size) if model is not None else 224
        self.detect_mpp = float(opts.detect_mpp or self.crop_mpp)
        self.foreground = foreground if foreground is not None else detect_foreground(self.slide)
        margin = self.detector.context_um()
        if abs(self.detect_mpp - self.crop_mpp) < 1e-9:  # crops are cut from the tile: it must hold them
            margin = max(margin, self.crop_size / 2 * self.crop_mpp + 2 * self.crop_mpp)
        self.tiles = LocalisationTiles(self.slide, self.detect_mpp, opts.core_px, margin, self.foreground)
        if classifiers is None:
            classifiers = classifiers_of_model(model, opts.normal_classes) if model is not None else []
        self.classifiers = list(classifiers)
        self.slide_scores = slide_scores or {}
        #: How the slide is named in index rows: the path the tile stage recorded, so tiles and cells agree.
        self.slide_key = str(slide_key or self.slide.path)
        st = self.slide.path.stat()
        self.work_fingerprint = {
            "stage": "cells", "detector": json_safe(self.detector.params()),
            "detect_mpp": self.detect_mpp, "core_px": opts.core_px, "margin_px": self.tiles.margin_px,
            "crop_mpp": self.crop_mpp, "crop_size": self.crop_size,
            "model_sha256": model.sha256 if model is not None else None,
            "feature": model.backbone.feature if model is not None else None,
            "slide": {"path": str(self.slide.path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                      "mpp": list(self.slide.mpp)},
        }
        self.fingerprint = {**self.work_fingerprint,
                            "classifiers": {c.name: c.describe() for c in self.classifiers},
                            "threshold": opts.threshold, "top_k": opts.top_k}
        #: Not part of the fingerprints: a region run and a whole-slide run share their journal.
        self.region = tuple(float(v) for v in region) if region is not None else None
        self._cancel = threading.Event()
        self._scheduler = None
        self._early_regions: list[tuple[float, float, float, float]] = []
        self._lock = threading.Lock()
        self.timings = {"read_s": 0.0, "detect_s": 0.0, "crop_s": 0.0, "embed_s": 0.0, "wall_s": 0.0}

    @classmethod
    def from_result(cls, result, model, **kwargs) -> "CellAnalysis":
        """The cell stage of an analysed slide (a ``SlideResult``), writing into its folder."""
        mpp = (result.slide["mpp_x"], result.slide["mpp_y"]) if result.slide.get("mpp_source") == "user" else None
        kwargs.setdefault("slide_scores", result.slide_scores)
        return cls(result.slide["path"], result.folder, model, mpp=mpp, slide_key=str(result.slide["path"]),
                   **kwargs)

    # ---------------------------------------------------------------------------------------------- control
    def cancel(self) -> None:
        self._cancel.set()

    def prioritise_region(self, x0: float, y0: float, x1: float, y1: float) -> int:
        """Localise the tiles of this level-0 region next (the viewer calls this with its viewport)."""
        hits = tiles_in_region(self.tiles.boxes, x0, y0, x1, y1)
        if self._scheduler is None:
            self._early_regions.append((x0, y0, x1, y1))
            return 0
        return self._scheduler.prioritise(hits)

    def existing(self) -> CellResult | None:
        """A complete earlier cell stage of this slide with the same model, detector and heads."""
        path = self.folder / CELLS_FILE
        if not path.is_file():
            return None
        try:
            cf = load_cells(path, embeddings=False)
        except CervixFMError:
            return None
        meta = cf.meta
        if meta.get("status") != "complete" or meta.get("fingerprint") != json_safe(self.fingerprint):
            return None
        return CellResult(self.folder, "complete", cf.table, meta.get("record", {}))

    # ---------------------------------------------------------------------------------------------- running
    def run(self, progress: Callable[[CellProgress], None] | None = None, reuse: bool = True) -> CellResult:
        if reuse and (done := self.existing()) is not None:
            self._attach_to_result(done.record)
            return done
        start = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        journal = CellJournal(self.folder / CELL_WORK_DIR, json_safe(self.work_fingerprint))
        done_tiles = journal.done_tiles()
        skipped = journal.skipped()
        scope = (tiles_in_region(self.tiles.boxes, *self.region).tolist() if self.region is not None
                 else list(range(len(self.tiles))))
        todo = [i for i in scope if i not in done_tiles and i not in skipped]
        self._scheduler = TileScheduler(todo)
        for region in self._early_regions:
            self.prioritise_region(*region)
        previous_cells = sum(len(p["cell_centres"]) for p in journal.iter_parts()) if done_tiles else 0
        self._process(journal, progress, len(done_tiles.intersection(scope)), previous_cells, start, len(scope))
        if self._cancel.is_set():
            status = "cancelled"
        elif self.region is None or len(journal.done_tiles() | set(journal.skipped())) >= len(self.tiles):
            status = "complete"
        else:
            status = "partial"
        self.timings["wall_s"] = time.perf_counter() - start
        result = self._assemble(journal, status)
        if status == "complete":
            journal.remove()
        return result

    def _process(self, journal: CellJournal, progress, already_done: int, previous_cells: int, start: float,
                 total: int) -> None:
        readers = self.options.readers
        buffer: queue.Queue = queue.Queue(maxsize=2 * readers + readers)
        threads = [threading.Thread(target=self._reader, args=(buffer,), name=f"cell-reader-{k}", daemon=True)
                   for k in range(readers)]
        for t in threads:
            t.start()
        finished, found, tiles_done = 0, 0, already_done
        pending: list[tuple[int, CellTable, list[np.ndarray]]] = []
        new_skips: dict[int, str] = {}
        try:
            while finished < readers and not self._cancel.is_set():
                try:
                    item = buffer.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    finished += 1
                elif isinstance(item[1], CervixFMError):  # an unreadable tile: skipped and recorded
                    new_skips[item[0]] = str(item[1])
                elif isinstance(item[1], Exception):  # a bug: stop rather than report a complete stage
                    raise item[1]
                else:
                    pending.append(item)
                waiting = sum(len(p[1]) for p in pending)
                if pending and (waiting >= self.options.batch_size or len(pending) >= MAX_PENDING_TILES
                                or finished == readers):
                    flushed = self._flush(journal, pending)
                    tiles_done += len(pending)
                    found += len(flushed)
                    pending = []
                    if progress:
                        elapsed = time.perf_counter() - start
                        rate = found / elapsed if elapsed > 0 else 0.0
                        left = total - tiles_done - len(new_skips)
                        tile_rate = (tiles_done - already_done) / elapsed if elapsed > 0 else 0.0
                        progress(CellProgress(tiles_done, total, previous_cells + found, rate,
                                              left / tile_rate if tile_rate else None, flushed))
                if new_skips:
                    journal.record_skipped(new_skips)
                    new_skips = {}
        finally:  # cancelled, or an error in this thread: stop the readers (they may be blocked on a full buffer)
            if any(t.is_alive() for t in threads):
                self._cancel.set()
                while any(t.is_alive() for t in threads):
                    try:
                        buffer.get(timeout=0.05)
                    except queue.Empty:
                        pass
            for t in threads:
                t.join(timeout=5)

    def _reader(self, buffer: queue.Queue) -> None:
        try:
            while not self._cancel.is_set():
                i = self._scheduler.take()
                if i is None:
                    break
                try:
                    item = self._localise(i)
                except CervixFMError as exc:
                    log.warning("cell tile %d skipped: %s", i, exc)
                    item = (i, exc)
                except Exception as exc:  # handed to the main thread, which raises it
                    item = (i, exc)
                while not self._cancel.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        finally:
            buffer.put(None)

    def _localise(self, i: int) -> tuple[int, CellTable, list[np.ndarray]]:
        t0 = time.perf_counter()
        tile, frame = self.tiles.read(i)
        t1 = time.perf_counter()
        cells = self.tiles.owned(i, self.detector.detect(tile, frame))
        t2 = time.perf_counter()
        if self.model is not None:
            crops, boxes = crops_for(cells, tile, frame, self.slide, self.crop_mpp, self.crop_size)
        else:
            crops = []
            boxes = np.array([crop_box(c.centre[0], c.centre[1], self.crop_mpp, self.slide.mpp, self.crop_size)
                              for c in cells]).reshape(-1, 4)
        t3 = time.perf_counter()
        with self._lock:
            self.timings["read_s"] += t1 - t0
            self.timings["detect_s"] += t2 - t1
            self.timings["crop_s"] += t3 - t2
        return i, CellTable.from_cells(cells, i, boxes), crops

    def _flush(self, journal: CellJournal, pending: list[tuple[int, CellTable, list[np.ndarray]]]) -> CellTable:
        table = CellTable.concat([p[1] for p in pending])
        if self.model is not None:
            crops = [c for p in pending for c in p[2]]
            table.embeddings = self._embed(crops)
        journal.append_tiles([p[0] for p in pending], table)
        return table

    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        b = self.options.batch_size
        chunks = [self.model.encode(crops[s:s + b])["features"] for s in range(0, len(crops), b)]
        self.timings["embed_s"] += time.perf_counter() - t0
        return np.concatenate(chunks) if chunks else np.zeros((0, self.model.embed_dim), np.float32)

    # --------------------------------------------------------------------------------------------- assembly
    def _assemble(self, journal: CellJournal, status: str) -> CellResult:
        dim = self.model.embed_dim if self.model is not None else None
        table = journal.collect_table(dim=dim)
        if len(table):
            table = table.take(drop_duplicates(table.centres, table.nuclei(), table.tile_index))
        if table.embeddings is not None:
            for clf in self.classifiers:
                table.heads[clf.name] = clf.outputs(table.embeddings)
        slide_name = self.slide.path.stem
        ids = cell_ids(table, slide_name)
        record = self._record(table, ids, status, journal)
        primary = self.classifiers[0] if self.classifiers and table.heads else None
        files = {"cells": CELLS_FILE}
        if self.options.exports:
            offset = (float(self.slide.bounds[0]), float(self.slide.bounds[1]))
            head = primary.name if primary else None
            classes = primary.classes if primary else ()
            colors = primary.colors if primary else None
            write_geojson(self.folder / GEOJSON_FILE, table, slide_name, head, classes, colors, offset, ids)
            write_csv(self.folder / CSV_FILE, table, ids, head, classes)
            files.update(geojson=GEOJSON_FILE, csv=CSV_FILE)
            if primary is not None:
                order = rank(table.heads[primary.name]["abnormality"])
                write_csv(self.folder / RANKED_FILE, table, ids, head, classes, order=order)
                files["ranked"] = RANKED_FILE
        if self.options.index and status == "complete" and table.embeddings is not None and len(table):
            if self._write_index(table, ids, primary):
                files["index"] = INDEX_DIR
        record["files"] = files
        meta = {"status": status, "fingerprint": json_safe(self.fingerprint), "record": record,
                "slide": slide_name, "crop_mpp": self.crop_mpp, "crop_size": self.crop_size,
                "detect_mpp": self.detect_mpp, "slide_mpp": list(self.slide.mpp),
                "model": self.model.identity() if self.model is not None else None}
        save_cells(self.folder / CELLS_FILE, table, meta, {c.name: c.classes for c in self.classifiers})
        self._attach_to_result(record)
        return CellResult(self.folder, status, table, record)

    def _write_index(self, table: CellTable, ids: list[str], primary: CellClassifier | None) -> bool:
        try:
            from ..retrieval.identity import identity_of_model
        except ImportError:  # a build without the retrieval package: the embeddings stay in cells.h5
            return False
        write_slide_index(self.folder / INDEX_DIR, table, self.slide_key, ids, identity_of_model(self.model),
                          {"size": self.crop_size, "mpp": self.crop_mpp},
                          primary.name if primary else None, primary.classes if primary else ())
        return True

    def _record(self, table: CellTable, ids: list[str], status: str, journal: CellJournal) -> dict[str, Any]:
        opts = self.options
        record: dict[str, Any] = {
            "status": status, "count": len(table), "detector": self.detector.name,
            "detect_mpp": self.detect_mpp, "crop_mpp": self.crop_mpp, "crop_size": self.crop_size,
            "tiles_total": len(self.tiles), "tiles_skipped": len(journal.skipped()),
            "truncated": int(table.truncated.sum()),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "embedded": table.embeddings is not None,
            "classifiers": {c.name: c.describe() for c in self.classifiers},
        }
        if status == "partial":
            record["region"] = list(self.region)
        if not self.classifiers or table.embeddings is None:
            return record
        scores, ranked = {}, {}
        for clf in self.classifiers:
            out = table.heads[clf.name]
            scores[clf.name] = cell_slide_summary(out["probs"], out["abnormality"], clf, opts.threshold,
                                                  opts.summary_top_k, self.slide_scores)
            lists = ranked_lists(out["probs"], out["abnormality"], clf, opts.top_k)
            ranked[clf.name] = {
                name: [{"id": ids[i], "index": int(i), "x": round(float(table.centres[i, 0]), 2),
                        "y": round(float(table.centres[i, 1]), 2),
                        "score": round(float(out["abnormality"][i] if name == "abnormality"
                                             else out["probs"][i, clf.classes.index(name)]), 5)}
                       for i in idx]
                for name, idx in lists.items()}
        record["slide_summary"] = scores
        record["ranked"] = ranked
        return record

    def _attach_to_result(self, record: dict[str, Any]) -> None:
        """Record the stage in the slide's result.json, when the folder holds a tile-stage result."""
        from ..pipeline.results import RESULT_FILE, load_result

        if not (self.folder / RESULT_FILE).is_file():
            return
        try:
            result = load_result(self.folder)
        except CervixFMError:
            return
        result.cells = record
        result.save_metadata()


def json_safe(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, numpy scalars numbers), for comparisons."""
    import json

    def default(v):
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        return str(v)

    return json.loads(json.dumps(value, default=default))


def analyze_cells(result, model, progress=None, reuse: bool = True, **kwargs) -> CellResult:
    """One call: the cell stage of an analysed slide."""
    return CellAnalysis.from_result(result, model, **kwargs).run(progress, reuse=reuse)
