"""Cells into the similar-cell search index (``core.retrieval.CellIndex``).

Each cell becomes one entry: its embedding, the level-0 box of the crop that was embedded (so a search hit shows
exactly what the backbone saw), the slide, the predicted class as label, the abnormality score and the cell's id
as name (to find the cell again in ``cells.h5`` / ``cells.geojson``). Every analysed slide gets its own index in
``<result>/cell_index``; ``cell_entries`` gives the same rows for a library index spanning many slides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .table import CellTable

INDEX_DIR = "cell_index"


def cell_rows(table: CellTable, slide: str, ids: Sequence[str], head: str | None = None,
              classes: Sequence[str] = ()):
    """A ``core.retrieval.RowTable`` for the cells of ``table`` (source "cell")."""
    from ..retrieval.rows import RowTable

    labels = scores = None
    if head is not None and head in table.heads:
        probs = table.heads[head]["probs"]
        labels = [classes[i] for i in probs.argmax(axis=1)] if len(probs) else []
        scores = table.heads[head]["abnormality"]
    return RowTable.from_columns(source="cell", slide=slide, boxes=np.round(table.crop_boxes), label=labels,
                                 score=scores, name=list(ids), n=len(table))


def write_slide_index(folder: str | Path, table: CellTable, slide: str, ids: Sequence[str], identity: dict,
                      crop: dict, head: str | None = None, classes: Sequence[str] = ()):
    """(Re)build the slide's own cell index in ``folder``; returns the ``CellIndex``."""
    from ..retrieval import CellIndex

    if table.embeddings is None:
        raise ValueError("cells without embeddings cannot be indexed")
    index = CellIndex.create(folder, table.embeddings.shape[1], backbone=identity, kind="cells", tile=crop,
                             info={"slide": slide}, overwrite=True)
    index.add(table.embeddings, cell_rows(table, slide, ids, head, classes), backbone=identity)
    index.save()
    return index


def cell_entries(result, head: str | None = None):
    """(embeddings (N, D), rows) of an analysed slide's cells, for adding to any cell index."""
    from .export import cell_ids

    cf = result.read_cells()
    table = cf.table
    if table.embeddings is None:
        from ..errors import InputError

        raise InputError(f"The cells of {result.folder} were localised without a model; re-run "
                         "`cervixfm analyze --cells` with a backbone to embed them.")
    if head is None and cf.head_classes:
        head = next(iter(cf.head_classes))
    slide = str(result.slide["path"])
    rows = cell_rows(table, slide, cell_ids(table, Path(slide).stem), head, cf.head_classes.get(head, ()))
    return table.embeddings, rows
