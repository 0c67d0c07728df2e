"""Crash-safe progress of a cell analysis, on the pipeline's journal: one atomic part file per group of finished
tiles, holding the tiles' cells (outlines, measurements, crop boxes, embeddings).

A part lists the localisation tiles it completes in ``tile_index`` (so ``done_tiles`` works as for tile features)
and the cells of those tiles as ragged columns. Resuming skips the listed tiles; assembling sorts cells by tile and
then by the order the detector gave them, so the result does not depend on the order tiles were processed in.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ..io import atomic_write
from ..pipeline.journal import Journal
from .table import CellTable

_COLUMNS = ("centres", "cell_coords", "cell_offsets", "nucleus_coords", "nucleus_offsets", "measurements",
            "tile_index", "truncated", "detector_score", "crop_boxes")


class CellJournal(Journal):
    def append_tiles(self, tiles: Sequence[int], table: CellTable) -> None:
        """Persist finished tiles (possibly without cells); after this returns, a crash does not lose them."""
        with self._lock:
            path = self.folder / f"part-{self._next_part:07d}.npz"
            self._next_part += 1
        arrays = {f"cell_{k}": getattr(table, k) for k in _COLUMNS}
        if table.embeddings is not None:
            arrays["cell_embeddings"] = np.asarray(table.embeddings, np.float32)
        with atomic_write(path, "wb") as handle:
            np.savez(handle, tile_index=np.asarray(tiles, np.int64),
                     measurement_names=np.array(json.dumps(table.measurement_names)), **arrays)

    def collect_table(self, measurement_names: Sequence[str] = (), dim: int | None = None) -> CellTable:
        """Every journalled cell, ordered by tile (a tile written twice by a crash is taken once)."""
        tables: dict[int, CellTable] = {}
        for part in self.iter_parts():
            names = json.loads(str(part["measurement_names"]))
            cols = {k: part[f"cell_{k}"] for k in _COLUMNS}
            emb = part.get("cell_embeddings")
            table = CellTable(measurement_names=names, embeddings=emb, **cols)
            for tile in np.unique(part["tile_index"]):
                if int(tile) not in tables:
                    tables[int(tile)] = table.take(np.flatnonzero(table.tile_index == tile))
        ordered = [tables[k] for k in sorted(tables)]
        if not any(len(t) for t in ordered):
            return CellTable.empty(measurement_names, dim)
        return CellTable.concat(ordered)
