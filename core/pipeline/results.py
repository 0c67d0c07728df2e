"""One result object per analysed slide, saved beside its features and read back by the CLI, exporters and viewer.

On disk, in the slide's output folder: ``result.json`` (metadata, provenance, summaries), ``tiles.npz`` (tile boxes
and per-tile head outputs, arrays) and ``features.h5`` (CLAM/TRIDENT layout). ``result.json`` is written last, so its
presence with ``status == "complete"`` means the rest is complete too. The optional cell stage (``core.cells``)
adds ``cells.h5`` and its exports and records its summary, ranked cells and file names under ``cells``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import atomic_write, atomic_write_text, json_default

RESULT_FILE = "result.json"
TILES_FILE = "tiles.npz"
FEATURES_FILE = "features.h5"


@dataclasses.dataclass
class SlideResult:
    folder: Path
    slide: dict[str, Any]  # path, size, MPP (and where it came from)
    model: dict[str, Any]  # name, checkpoint, sha256, preset, embed dim, bundle
    params: dict[str, Any]  # tile size, target MPP, overlap, level-0 tile size, foreground settings
    status: str  # "complete", "cancelled", "partial" (a region only: ``summary["region"]``)
    tiles: np.ndarray  # (N, 4) level-0 x, y, w, h of analysed tiles (rows of the features file)
    tile_outputs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # e.g. "tiles.probs" (N, C)
    heads: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # name -> role, classes, colours
    slide_scores: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # head -> probs, label
    skipped: dict[int, str] = dataclasses.field(default_factory=dict)  # grid tile index -> reason
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)  # counts, fractions, timings
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The cell stage's record (status, counts, slide summary, ranked cells, files); empty when it has not run.
    cells: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def features_path(self) -> Path:
        return self.folder / FEATURES_FILE

    def read_features(self):
        from .feature_file import read_features

        return read_features(self.features_path)

    def read_cells(self, embeddings: bool = True):
        """The cell stage's ``CellFile`` (table of cells, metadata); InputError when the stage has not run."""
        from ..cells.table import CELLS_FILE, load_cells

        return load_cells(self.folder / self.cells.get("files", {}).get("cells", CELLS_FILE), embeddings)

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.folder / TILES_FILE, "wb") as handle:
            np.savez(handle, tiles=np.asarray(self.tiles, np.int64), **self.tile_outputs)
        self.save_metadata()

    def save_metadata(self) -> None:
        """Rewrite ``result.json`` only (the cell stage adds its record without touching the tile arrays)."""
        meta = {
            "slide": self.slide, "model": self.model, "params": self.params, "status": self.status,
            "heads": self.heads, "slide_scores": self.slide_scores,
            "skipped": {str(k): v for k, v in sorted(self.skipped.items())},
            "summary": self.summary, "provenance": self.provenance,
            "files": {"features": FEATURES_FILE, "tiles": TILES_FILE},
        }
        if self.cells:
            meta["cells"] = self.cells
        atomic_write_text(self.folder / RESULT_FILE, json.dumps(meta, indent=1, default=json_default))


def load_result(folder: str | Path) -> SlideResult:
    folder = Path(folder)
    meta_path = folder / RESULT_FILE
    if not meta_path.is_file():
        raise InputError(f"{folder} holds no analysis result ({RESULT_FILE} missing): run `cervixfm analyze` first.")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(folder / TILES_FILE) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"Analysis result in {folder} is damaged: {exc}. Re-run the analysis.") from exc
    tiles = arrays.pop("tiles")
    return SlideResult(
        folder=folder, slide=meta["slide"], model=meta["model"], params=meta["params"], status=meta["status"],
        tiles=tiles, tile_outputs=arrays, heads=meta.get("heads", {}), slide_scores=meta.get("slide_scores", {}),
        skipped={int(k): v for k, v in meta.get("skipped", {}).items()}, summary=meta.get("summary", {}),
        provenance=meta.get("provenance", {}), cells=meta.get("cells", {}),
    )
