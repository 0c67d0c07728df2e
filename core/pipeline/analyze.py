"""One slide, start to finish: open, find the cell-bearing area, tile, run the model, write features and results.

``SlideAnalysis`` is the object the viewer drives (run in a worker thread, ``prioritise_region`` for the viewport,
``cancel``); ``analyze_slide`` is the one-call form the CLI uses. Work already done is reused: a complete result
made with the same model and parameters is returned as is, and an interrupted run resumes from its journal.
With ``cells=`` the cell stage (``core.cells.CellAnalysis``: every cell found, embedded, classified, ranked) runs
after the tiles, in the same folder and with the same model. With ``region=`` only the tiles (and cells) of one
level-0 rectangle are analysed, e.g. what a viewer shows: the result is "partial" and the journal stays, so a later
run of the whole slide continues from it instead of starting again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import CervixFMError
from ..slides import TileGrid, detect_foreground, open_slide
from .analysis_model import AnalysisModel
from .feature_file import write_features
from .journal import Journal
from .results import FEATURES_FILE, RESULT_FILE, SlideResult, load_result
from .runner import Progress, TileRun
from .scheduler import tiles_in_region

WORK_DIR = ".work"


def result_folder(out_root: str | Path, slide_path: str | Path) -> Path:
    return Path(out_root) / Path(slide_path).stem


def default_readers(device) -> int:
    """Tile-reading threads: 2 on a CPU, where the backbone is the bottleneck; on a GPU as many as the cores
    allow, up to 8. Measured on an H200 with 16 cores (ViT-L, bf16): 2 readers fed 678 tiles/s, 8 fed 1088 and 14
    fed 975 (the threads then contend for the interpreter), against 1955 tiles/s for the backbone alone."""
    if getattr(device, "type", str(device)) != "cuda":
        return 2
    return max(2, min(8, (os.cpu_count() or 2) - 2))


class SlideAnalysis:
    def __init__(
        self,
        slide_path: str | Path,
        model: AnalysisModel,
        out_root: str | Path,
        batch_size: int = 32,
        readers: int | None = None,
        overlap_px: int = 0,
        mpp: float | None = None,
        use_foreground: bool = True,
        cells=None,
        region: tuple[float, float, float, float] | None = None,
    ):
        """``cells``: True or a ``core.cells.CellOptions`` to run the cell stage after the tiles; ``region``: level-0
        (x0, y0, x1, y1) to analyse only the tiles meeting it (a "partial" result, resumable by a whole-slide run);
        ``readers``: tile-reading threads (None: ``default_readers`` for the model's device)."""
        readers = default_readers(model.device) if readers is None else readers
        self.model = model
        self.slide = open_slide(slide_path, mpp=mpp)
        self.folder = result_folder(out_root, slide_path)
        self.batch_size, self.readers = batch_size, readers
        self.foreground = detect_foreground(self.slide) if use_foreground else None
        self.grid = TileGrid(self.slide, model.tile_size, model.target_mpp, overlap_px, self.foreground)
        w0, h0 = self.grid.size0
        self.boxes = np.column_stack([self.grid.coords, np.full(len(self.grid), w0), np.full(len(self.grid), h0)])
        self.params = {
            "tile_size": model.tile_size, "target_mpp": model.target_mpp, "overlap_px": overlap_px,
            "tile_size_level0": [w0, h0], "read_level": self.grid.level, "foreground": use_foreground,
            "slide_mpp": list(self.slide.mpp), "batch_size": batch_size,
        }
        st = self.slide.path.stat()
        self.fingerprint = {
            "model_sha256": model.sha256, "feature": model.backbone.feature,
            # features of another precision must not be mixed into a journal (fp32 left out: older journals resume)
            **({"precision": model.precision} if getattr(model, "precision", "fp32") != "fp32" else {}),
            "params": {k: v for k, v in self.params.items() if k != "batch_size"},
            "slide": {"path": str(self.slide.path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns},
        }
        #: Not part of the fingerprint: a region run and a whole-slide run share their journal.
        self.region = tuple(float(v) for v in region) if region is not None else None
        self._run: TileRun | None = None
        self._cells = None  # the cell stage, once it exists
        self.cell_options = None
        if cells:
            from ..cells import CellOptions

            self.cell_options = cells if isinstance(cells, CellOptions) else CellOptions(batch_size=batch_size,
                                                                                       readers=readers)
        self._cancel_requested = False
        self._early_regions: list[tuple[float, float, float, float]] = []  # asked for before run() started

    # ------------------------------------------------------------------------------------------------ control
    def cancel(self) -> None:
        self._cancel_requested = True
        if self._run is not None:
            self._run.cancel()
        if self._cells is not None:
            self._cells.cancel()

    def prioritise_region(self, x0: float, y0: float, x1: float, y1: float) -> int:
        """Analyse the tiles of this level-0 region next (the viewer calls this with its viewport)."""
        if self._cells is not None:
            return self._cells.prioritise_region(x0, y0, x1, y1)
        if self._run is None:
            self._early_regions.append((x0, y0, x1, y1))
            return 0
        return self._run.prioritise_region(x0, y0, x1, y1)

    def existing_result(self) -> SlideResult | None:
        """A complete earlier result of this slide with this model and these parameters, if any."""
        if not (self.folder / RESULT_FILE).is_file():
            return None
        try:
            result = load_result(self.folder)
        except CervixFMError:
            return None
        same = json.loads(json.dumps(result.provenance.get("fingerprint"))) == json.loads(json.dumps(self.fingerprint))
        return result if same and result.status == "complete" and result.features_path.is_file() else None

    # ------------------------------------------------------------------------------------------------ running
    def run(self, progress: Callable[[Progress], None] | None = None, reuse: bool = True,
            cell_progress: Callable | None = None,
            tiles_finished: Callable[[SlideResult], None] | None = None) -> SlideResult:
        """Tiles, then (when asked) cells; ``cell_progress`` receives ``core.cells.CellProgress`` updates and
        ``tiles_finished`` the tile-stage result before the cell stage starts (a viewer shows the slide score
        while cells are still being found)."""
        if reuse and (done := self.existing_result()) is not None:
            if tiles_finished:
                tiles_finished(done)
            return self._run_cells(done, cell_progress, reuse)
        started = time.time()
        journal = Journal(self.folder / WORK_DIR, self.fingerprint)
        order = tiles_in_region(self.boxes, *self.region) if self.region is not None else None
        self._run = TileRun(self.boxes, self.grid.read, self.model.encode, journal, self.batch_size, self.readers,
                            order=order)
        for region in self._early_regions:
            self._run.prioritise_region(*region)
        if self._cancel_requested:
            self._run.cancel()
        outcome = self._run.run(progress)
        if outcome.cancelled:
            status = "cancelled"
        elif self.region is None or len(journal.done_tiles() | set(outcome.skipped)) >= len(self.boxes):
            status = "complete"  # a region run that happened to finish the slide is a complete run
        else:
            status = "partial"
        result = self._assemble(journal, status, outcome.skipped, time.time() - started)
        if status == "complete":
            journal.remove()
        if status != "cancelled":
            if tiles_finished:
                tiles_finished(result)
            result = self._run_cells(result, cell_progress, reuse)
        return result

    def _run_cells(self, result: SlideResult, progress, reuse: bool) -> SlideResult:
        if self.cell_options is None or self._cancel_requested:
            return result
        from ..cells import CellAnalysis

        self._cells = CellAnalysis.from_result(result, self.model, options=self.cell_options,
                                               foreground=self.foreground, region=self.region)
        for region in self._early_regions:
            self._cells.prioritise_region(*region)
        if self._cancel_requested:
            self._cells.cancel()
        outcome = self._cells.run(progress, reuse=reuse)
        result.cells = outcome.record
        return result

    def _assemble(self, journal: Journal, status: str, skipped: dict[int, str], seconds: float) -> SlideResult:
        rows = journal.collect()
        index = rows.get("tile_index", np.zeros(0, np.int64))
        features = rows.get("features", np.zeros((0, self.model.embed_dim), np.float32))
        coords = rows.get("coords", np.zeros((0, 2), np.int64))
        slide_meta = self.slide.metadata()
        attrs = {
            "patch_size": self.model.tile_size, "patch_size_level0": int(self.grid.size0[0]),
            "level0_magnification": slide_meta["magnification"],
            "target_magnification": 10.0 / self.model.target_mpp, "target_mpp": self.model.target_mpp,
            "level0_width": slide_meta["width"], "level0_height": slide_meta["height"],
            "level0_mpp": self.slide.mpp[0], "mpp_source": self.slide.mpp_source,
            "encoder": self.model.name, "checkpoint_sha256": self.model.sha256,
            "software": self.model.identity()["software"], "status": status,
        }
        write_features(self.folder / FEATURES_FILE, [(features, coords)], attrs, dim=self.model.embed_dim)
        outputs = {k: v for k, v in rows.items() if k not in ("tile_index", "coords", "features")}
        outputs["grid_index"] = index
        heads: dict[str, dict[str, Any]] = {}
        scores: dict[str, dict[str, Any]] = {}
        summary: dict[str, Any] = {
            "tiles_total_grid": int(self.grid.n_total), "tiles_cell_area": len(self.grid),
            "tiles_analysed": int(len(index)), "tiles_skipped": len(skipped),
            "cell_area_fraction": self.foreground.fraction if self.foreground is not None else None,
            "seconds": round(seconds, 2),
        }
        if status == "partial":
            summary["region"] = list(self.region)
        for name, head in self.model.heads.items():
            heads[name] = {"role": head.spec.role, "kind": head.kind, "classes": head.classes, "colors": head.colors}
            if head.spec.role == "tile-classifier" and f"{name}.probs" in outputs:
                counts = np.bincount(outputs[f"{name}.probs"].argmax(1), minlength=len(head.classes))
                summary[f"{name}.tile_counts"] = dict(zip(head.classes, counts.tolist()))
            if head.spec.role == "slide" and len(features) and status == "complete":
                probs, attention, _ = head.module.predict(features)
                outputs[f"{name}.attention"] = attention.astype(np.float32)
                scores[name] = {"classes": head.classes, "probs": probs.tolist(),
                                "label": head.classes[int(np.argmax(probs))]}
        result = SlideResult(
            folder=self.folder, slide={k: slide_meta[k] for k in ("path", "width", "height", "mpp_x", "mpp_y",
                                                                   "mpp_source", "vendor")},
            model=self.model.identity(), params=self.params, status=status, tiles=self.boxes[index],
            tile_outputs=outputs, heads=heads, slide_scores=scores, skipped=skipped, summary=summary,
            provenance={"fingerprint": self.fingerprint, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        )
        result.save()
        return result


def analyze_slide(slide_path, model: AnalysisModel, out_root, progress=None, reuse: bool = True, **options) -> SlideResult:
    return SlideAnalysis(slide_path, model, out_root, **options).run(progress, reuse=reuse)
