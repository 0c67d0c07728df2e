"""An analysis started from the viewer: where its results live, how the GUI follows it, and the overlay models
(``core.overlays``) that show it.

Nothing here touches a widget. The analysis itself runs in the analysis process (``analysis_worker``, started by
``analysis_host``); ``ViewerRun``, driven by ``jobs.AnalysisJob`` on a thread of the viewer, follows it: it turns
the process's plan into empty overlay models before the first tile, fills them as batches and cells arrive, and
loads the final cell table before the job reports the end.

Results go to ``<cache>/analyses/<slide fingerprint>/<bundle identity>/<slide name>/``: keyed by the slide (the
fingerprint of its name, size and content that also keys its annotations) and by the bundle, so the pipeline's
resume applies (analysing again continues where the last run stopped) and reopening a slide finds what was
computed for it, wherever the slide's folder is (results never go beside a slide, which may be read-only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from core.annotations import slide_fingerprint
from core.cells.classify import DEFAULT_NORMAL_CLASSES, normal_mask
from core.errors import CervixFMError
from core.models.bundle import MANIFEST, read_bundle_spec
from core.overlays import ObjectSet, TileScores
from core.paths import cache_dir
from core.pipeline.analyze import WORK_DIR, SlideAnalysis, result_folder
from core.pipeline.results import RESULT_FILE, SlideResult, load_result

from .priority import lower_thread_priority

log = logging.getLogger(__name__)

ANALYSES_DIR = "analyses"
#: Tiles per batch: small enough that a cancel (which waits for the batch in flight) feels immediate on a CPU and
#: that the heat map grows in visible steps, large enough to keep a GPU busy.
BATCH_SIZE = 16
CELL_COLOR = (0, 200, 255)
NUCLEUS_COLOR = (255, 214, 64)


# --------------------------------------------------------------------------------------------------- where
def bundle_identity(folder: str | Path) -> str:
    """A folder name for one bundle: its readable name plus a hash of where it is and what its manifest says, so
    two bundles never share results and an edited bundle (another head, other weights) starts afresh."""
    folder = Path(folder)
    manifest = (folder / MANIFEST).read_bytes()
    try:
        name = str(json.loads(manifest).get("name") or folder.name)
    except (ValueError, AttributeError):
        name = folder.name
    digest = hashlib.sha256(str(folder.resolve()).encode("utf-8") + b"\0" + manifest).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "bundle"
    return f"{slug}-{digest}"


def analysis_root(slide_path: str | Path, bundle_folder: str | Path) -> Path:
    """The ``out_root`` of ``SlideAnalysis`` for this slide and bundle (it adds the slide's name)."""
    return cache_dir() / ANALYSES_DIR / slide_fingerprint(slide_path) / bundle_identity(bundle_folder)


def saved_result_folder(slide_path: str | Path, bundle_folder: str | Path) -> Path:
    return result_folder(analysis_root(slide_path, bundle_folder), slide_path)


# ------------------------------------------------------------------------------------------------ overlays
@dataclasses.dataclass(frozen=True)
class TileHead:
    """A tile classifier as the heat map reads it: the probability that a tile is anything but normal."""

    name: str
    classes: tuple[str, ...]
    normal: np.ndarray  # (C,) bool

    @classmethod
    def of(cls, name: str, classes, head_file: Path | None) -> "TileHead":
        """Normal classes from the head file's ``info["normal_classes"]`` when its trainer wrote them, else the
        usual names (NILM, normal cell types); when that says nothing useful, the first class is the normal one."""
        classes = tuple(str(c) for c in classes)
        listed = None
        if head_file is not None and Path(head_file).is_file():
            try:
                from core.models.heads.head_file import load_head

                listed = load_head(head_file).info.get("normal_classes")
            except CervixFMError:
                listed = None
        try:
            normal = normal_mask(classes, listed if listed else DEFAULT_NORMAL_CLASSES)
        except CervixFMError:
            normal = normal_mask(classes, DEFAULT_NORMAL_CLASSES)
        if not normal.any() or normal.all():
            normal = np.zeros(len(classes), bool)
            normal[0] = True
        return cls(name, classes, normal)

    def abnormality(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, np.float32).reshape(-1, len(self.classes))
        return np.clip(1.0 - probs[:, self.normal].sum(axis=1), 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass
class Overlays:
    """The models behind the analysis layers of one slide and bundle; the panel wraps each in a layer.

    ``tile_scores`` hold P(abnormal) per tile for every tile-classifier head; ``coverage`` marks analysed tiles when
    the bundle has no tile classifier (so progress is still visible); ``attention`` is each slide head's ABMIL
    attention as a percentile (raw softmax weights span orders of magnitude); ``cells`` are cell outlines classed by
    the first cell classifier, ``nuclei`` their nucleus contours.
    """

    model_name: str
    tile_heads: list[TileHead]
    tile_scores: dict[str, TileScores]
    coverage: TileScores | None = None
    attention: dict[str, TileScores] = dataclasses.field(default_factory=dict)
    cells: ObjectSet | None = None
    nuclei: ObjectSet | None = None
    cell_head: str | None = None

    def apply_tiles(self, indices: np.ndarray, outputs: dict) -> None:
        """Values of finished tiles (``indices`` into the grid the scores were made for)."""
        if not len(indices):
            return
        for head in self.tile_heads:
            probs = outputs.get(f"{head.name}.probs")
            if probs is not None and head.name in self.tile_scores:
                self.tile_scores[head.name].set_values(indices, head.abnormality(probs))
        if self.coverage is not None:
            self.coverage.set_values(indices, np.ones(len(indices), np.float32))

    @property
    def primary_scores(self) -> TileScores | None:
        """The heat map the score panel's histogram shows."""
        return next(iter(self.tile_scores.values()), None)


def _head_files(bundle_folder: Path | None) -> dict[str, Path]:
    if bundle_folder is None:
        return {}
    try:
        return {h.name: h.file for h in read_bundle_spec(bundle_folder).heads}
    except CervixFMError:
        return {}


def tile_heads_of_model(model) -> list[TileHead]:
    return [TileHead.of(h.spec.name, h.classes, h.spec.file) for h in model.heads_with_role("tile-classifier")]


def tile_heads_of_result(result: SlideResult, bundle_folder: Path | None) -> list[TileHead]:
    files = _head_files(bundle_folder)
    return [TileHead.of(name, h.get("classes", ()), files.get(name))
            for name, h in result.heads.items() if h.get("role") == "tile-classifier"]


def empty_overlays(model_name: str, boxes: np.ndarray, heads: list[TileHead]) -> Overlays:
    scores = {h.name: TileScores(boxes, name=f"Tile abnormality — {h.name}", label="P(abnormal)") for h in heads}
    coverage = None if heads else TileScores(boxes, name="Analysed tiles", label="analysed")
    return Overlays(model_name, heads, scores, coverage)


def attention_name(head: str) -> str:
    return f"Attention — {head} (percentile)"


def attention_ranks(result: SlideResult) -> dict[str, np.ndarray]:
    """Each slide head's attention over the result's tiles (rows of ``result.tiles``) as percentile ranks in
    [0, 1]: the heat map then spreads over its whole colour scale whatever the number of tiles."""
    out = {}
    for name, head in result.heads.items():
        att = result.tile_outputs.get(f"{name}.attention")
        if head.get("role") != "slide" or att is None or len(att) != len(result.tiles) or not len(att):
            continue
        order = np.argsort(np.asarray(att, np.float64), kind="stable")
        ranks = np.empty(len(att), np.float32)
        ranks[order] = np.arange(len(att), dtype=np.float32) / max(len(att) - 1, 1)
        out[name] = ranks
    return out


def cell_objects(classes: list[str] | None, colors, head: str | None) -> tuple[ObjectSet, ObjectSet]:
    """Empty detection (cells by class) and segmentation (nuclei) sets."""
    if classes:
        cells = ObjectSet(classes, colors if colors and len(colors) == len(classes) else None,
                          name="Cells" if not head or head.lower() == "cells" else f"Cells — {head}")
    else:
        cells = ObjectSet(["Cell"], [CELL_COLOR], name="Cells")
    return cells, ObjectSet(["Nucleus"], [NUCLEUS_COLOR], name="Nuclei (segmentation)")


def add_cells(cells: ObjectSet, nuclei: ObjectSet, table, head: str | None, keys=None) -> None:
    """Append a ``CellTable``'s outlines (classed by ``head``'s most probable class) and nuclei."""
    if table is None or not len(table):
        return
    outputs = table.heads.get(head) if head else None
    classes = (np.asarray(outputs["probs"]).argmax(axis=1) if outputs is not None and len(outputs["probs"])
               else np.zeros(len(table), np.int64))
    scores = outputs["abnormality"] if outputs is not None else None
    cells.add_geometries(table.polygons(), classes, scores, keys)
    nuclei.add_geometries(table.nuclei(), np.zeros(len(table), np.int64), None, keys)


def class_counts(objects: ObjectSet | None) -> dict[str, int]:
    """Objects per class name (unclassified ones left out)."""
    if objects is None:
        return {}
    snap = objects.snapshot()
    if not len(snap):
        return {name: 0 for name in snap.class_names}
    classes = snap.classes_of(np.arange(len(snap)))
    counts = np.bincount(classes[classes >= 0], minlength=len(snap.class_names))
    return {name: int(n) for name, n in zip(snap.class_names, counts)}


# -------------------------------------------------------------------------------------------- saved results
@dataclasses.dataclass
class SavedAnalysis:
    result: SlideResult
    overlays: Overlays
    cells: object | None  # core.cells.CellTable, without embeddings


def load_saved(slide_path: str | Path, bundle_folder: str | Path) -> SavedAnalysis | None:
    """The last result this bundle left for this slide (complete, partial or cancelled), with its overlays; None
    when it never ran. A damaged result raises ``CervixFMError`` (shown, and a new analysis replaces it)."""
    folder = saved_result_folder(slide_path, bundle_folder)
    if not (folder / RESULT_FILE).is_file():
        return None
    result = load_result(folder)
    return SavedAnalysis(result, *overlays_of_result(result, Path(bundle_folder)))


def overlays_of_result(result: SlideResult, bundle_folder: Path | None):
    """(Overlays, CellTable or None) of a finished result."""
    heads = tile_heads_of_result(result, bundle_folder)
    overlays = empty_overlays(str(result.model.get("name", "")), result.tiles, heads)
    overlays.apply_tiles(np.arange(len(result.tiles)), result.tile_outputs)
    overlays.attention = {name: TileScores(result.tiles, ranks, name=attention_name(name), label="attention")
                          for name, ranks in attention_ranks(result).items()}
    table = None
    if result.cells:
        try:
            table, classes, colors, head = _cell_table(result)
        except CervixFMError as exc:  # cells.h5 gone or damaged: the tile results still show
            log.warning("cells of %s not shown: %s", result.folder, exc)
            return overlays, None
        overlays.cells, overlays.nuclei = cell_objects(classes, colors, head)
        overlays.cell_head = head
        add_cells(overlays.cells, overlays.nuclei, table, head, keys=np.arange(len(table)))
    return overlays, table


def _cell_table(result: SlideResult):
    """(table, classes, colours, head) of the result's cell stage; the classes are the first classifier's."""
    cell_file = result.read_cells(embeddings=False)
    classifiers = result.cells.get("classifiers") or {}
    head = next(iter(classifiers), None)
    if head is None:
        return cell_file.table, None, None, None
    described = classifiers[head]
    return cell_file.table, list(described.get("classes") or cell_file.head_classes.get(head, [])), \
        described.get("colors"), head


# ------------------------------------------------------------------------------------------------------ run
@dataclasses.dataclass(frozen=True)
class RunRequest:
    slide_path: Path
    bundle: Path
    #: The microns per pixel the user set for this slide (None: the file's own), so tiles match what is shown.
    mpp: tuple[float, float] | None = None
    #: Level-0 (x0, y0, x1, y1) to analyse alone ("Analyse View"); None analyses the whole slide.
    region: tuple[float, float, float, float] | None = None
    cells: bool = False
    batch_size: int = BATCH_SIZE
    readers: int | None = None  # None: as many as suit the device (core.pipeline.analyze.default_readers)
    #: Where the results go (``SlideAnalysis``'s ``out_root``); None: ``analysis_root`` of the slide and bundle,
    #: resolved on the viewer's side (the analysis process may have been started under other settings).
    out_root: Path | None = None
    #: How the analysis process loads the bundle's model: a module-level function of the bundle folder (it is
    #: pickled by name); None loads it as ``core.pipeline.analysis_model.model_from_bundle`` does.
    loader: Callable | None = None


class ViewerRun:
    """One analysis as ``AnalysisJob`` follows it (``prepare`` is its ``make_analysis``); the analysis itself runs
    in the analysis process (``analysis_worker``), which sends plain data back.

    Messages for the GUI go through ``post`` as ``(kind, payload)``: ``("plan", Overlays)`` before the first tile,
    ``("tiles", result)`` when the tile stage ends (attention is in the overlays by then), ``("cells_progress",
    CellProgress)`` and ``("cells", (table, cells, nuclei))`` with the final, de-duplicated cells. ``abandon()`` (the
    slide was closed) stops the messages and the final loading, so a closing window does not wait for them."""

    def __init__(self, request: RunRequest, host, post: Callable[[tuple], None]) -> None:
        self.request = request
        self.host = host
        self._post = post
        self.remote = None
        self.plan = None
        self.overlays: Overlays | None = None
        self._abandoned = threading.Event()
        self._cancelled = threading.Event()

    # ----------------------------------------------------------------------------------- job protocol
    def prepare(self) -> "ViewerRun":
        """On the job's thread: hand the run to the analysis process, wait for its plan, show empty overlays."""
        lower_thread_priority()
        if self.request.out_root is None:
            self.request = dataclasses.replace(
                self.request, out_root=analysis_root(self.request.slide_path, self.request.bundle))
        self.remote = self.host.submit(self.request)
        if self._cancelled.is_set():
            self.remote.cancel()
        kind, payload = self.remote.next()
        if kind == "failed":
            _raise(payload)
        if kind != "plan":  # cancelled before the plan: nothing was analysed
            raise CervixFMError(f"The analysis process answered {kind!r} before its plan.")
        self.plan = payload
        self.overlays = overlays = overlays_of_plan(payload)
        self._send("plan", overlays)
        return self

    @property
    def boxes(self) -> np.ndarray | None:
        return self.plan.boxes if self.plan is not None else None

    @property
    def folder(self) -> Path | None:
        """The run's result folder."""
        return self.plan.folder if self.plan is not None else None

    def prioritise_region(self, x0: float, y0: float, x1: float, y1: float) -> None:
        if self.remote is not None:
            self.remote.prioritise_region(x0, y0, x1, y1)

    def cancel(self) -> None:
        self._cancelled.set()
        if self.remote is not None:
            self.remote.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def abandon(self) -> None:
        self._abandoned.set()
        self.cancel()

    def run(self, progress) -> SlideResult:
        while True:
            kind, payload = self.remote.next()
            if kind == "progress":
                if not self._abandoned.is_set():
                    progress(payload)
            elif kind == "tiles":
                self._on_tiles(payload)
            elif kind == "cells_progress":
                self._on_cells(payload)
            elif kind == "failed":
                _raise(payload)
            elif kind == "end":
                if payload.cells and not self._abandoned.is_set():
                    self._send_final_cells(payload)
                return payload

    # ------------------------------------------------------------------------------------- callbacks
    def _send(self, kind: str, payload) -> None:
        if not self._abandoned.is_set():
            self._post((kind, payload))

    def _on_tiles(self, result: SlideResult) -> None:
        """The tile stage is over: attention fills its (empty until now) heat map, and the GUI gets the result."""
        grid_index = result.tile_outputs.get("grid_index")
        if self.overlays is not None and grid_index is not None:
            for name, ranks in attention_ranks(result).items():
                if name in self.overlays.attention:
                    self.overlays.attention[name].set_values(grid_index, ranks)
        self._send("tiles", result)

    def _on_cells(self, p) -> None:
        overlays = self.overlays
        if overlays is not None and overlays.cells is not None and len(p.new_cells) and not self._abandoned.is_set():
            add_cells(overlays.cells, overlays.nuclei, p.new_cells, overlays.cell_head)
        self._send("cells_progress", p)

    def _send_final_cells(self, result: SlideResult) -> None:
        """The stage's own table (border duplicates removed, every cell classified) replaces the live one."""
        try:
            table, classes, colors, head = _cell_table(result)
        except CervixFMError as exc:
            log.warning("cells of %s not loaded: %s", result.folder, exc)
            return
        cells, nuclei = cell_objects(classes, colors, head)
        add_cells(cells, nuclei, table, head, keys=np.arange(len(table)))
        self._send("cells", (table, cells, nuclei))


def _raise(payload) -> None:
    """A ``failed`` reply: a user-facing error (bad slide, bad bundle) as ``CervixFMError``, a bug as
    ``RuntimeError`` (the job words it as an internal error)."""
    user_error, message = payload
    raise (CervixFMError if user_error else RuntimeError)(message)


def overlays_of_plan(plan) -> Overlays:
    """Empty layers for a run's tiles, filled with what earlier runs computed."""
    boxes = plan.boxes
    overlays = empty_overlays(plan.model_name, boxes, plan.tile_heads)
    overlays.attention = {name: TileScores(boxes, name=attention_name(name), label="attention")
                          for name in plan.slide_heads}
    if plan.earlier is not None:
        overlays.apply_tiles(plan.earlier["grid_index"], plan.earlier)
    if plan.cells:
        overlays.cells, overlays.nuclei = cell_objects(plan.cell_classes, plan.cell_colors, plan.cell_head)
        overlays.cell_head = plan.cell_head
    return overlays


def earlier_tile_outputs(analysis: SlideAnalysis) -> dict[str, np.ndarray] | None:
    """What earlier runs of this analysis already computed (a complete result, or the journal an interrupted or
    region-only run left), so a resumed run's heat map starts where the last one stopped."""
    done = analysis.existing_result()
    if done is not None:
        return done.tile_outputs
    work = analysis.folder / WORK_DIR
    try:
        same = json.loads((work / "run.json").read_text()) == json.loads(json.dumps(analysis.fingerprint))
    except (OSError, ValueError):
        return None
    if not same:
        return None
    rows: dict[str, list] = {}
    for part in sorted(work.glob("part-*.npz")):  # head outputs only: the features would cost memory for nothing
        try:
            with np.load(part) as data:
                for key in data.files:
                    if key == "tile_index" or key.endswith(".probs"):
                        rows.setdefault(key, []).append(data[key])
        except (OSError, ValueError, KeyError):
            continue  # a part being written or damaged: the run itself decides what to do with it
    if "tile_index" not in rows:
        return None
    out = {k: np.concatenate(v) for k, v in rows.items()}
    out["grid_index"] = out.pop("tile_index")
    return out
