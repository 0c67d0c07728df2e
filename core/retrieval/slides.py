"""Slide libraries: the tiles of analysed slides in a cell index, and query crops cut from a slide.

A slide analysis (``cervixfm analyze``) already holds one embedding per tile (``features.h5``) and its level-0 box
(``tiles.npz``); indexing a slide is copying those rows into the index with the slide's path, so no pixel is read
again.

Cells of a cell-level analysis (``cervixfm analyze --cells``) go in the same way (``what="cells"``), through
:func:`core.cells.index.cell_entries`: one entry per cell with its crop box, class, abnormality score and id.
Re-adding a slide replaces its earlier entries, so re-running the library build after new analyses is safe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import InputError
from .identity import identity_of_result
from .index import CellIndex
from .rows import RowTable

RESULT_FILE = "result.json"
WHAT = ("tiles", "cells")


def find_results(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Result folders among ``paths``: each is a result folder itself or an ``analyze --out`` folder holding some."""
    found: list[Path] = []
    for item in paths:
        p = Path(item)
        if (p / RESULT_FILE).is_file():
            found.append(p)
        elif p.is_dir():
            inside = sorted(c for c in p.iterdir() if (c / RESULT_FILE).is_file())
            if not inside:
                raise InputError(f"{p} holds no slide analysis results (no {RESULT_FILE} in it or its sub-folders). "
                                 "Run `cervixfm analyze SLIDE --out DIR` first.")
            found.extend(inside)
        else:
            raise InputError(f"Results folder {p} does not exist.")
    return found


def result_tile(result, what: str = "tiles") -> dict:
    """Crop size and resolution of a result's entries: query crops must be cut the same way to be comparable."""
    if what == "cells":
        return {"size": int(result.cells["crop_size"]), "mpp": float(result.cells["crop_mpp"])}
    return {"size": int(result.params["tile_size"]), "mpp": float(result.params["target_mpp"])}


def result_entries(result, what: str = "tiles") -> tuple[np.ndarray, RowTable]:
    """(features (N, D), rows) of an analysed slide's tiles or cells.

    Tiles take the first tile classifier's top class and probability as label and score when the analysis had
    one; cells (``cervixfm analyze --cells``) come from :func:`core.cells.index.cell_entries` with their class,
    abnormality score and cell id.
    """
    if what not in WHAT:
        raise InputError(f"Index entries must be one of {', '.join(WHAT)}, not {what!r}.")
    if result.status != "complete":
        raise InputError(f"The analysis in {result.folder} is {result.status}, not complete: finish it with "
                         "`cervixfm analyze` before indexing the slide.")
    if what == "cells":
        if (result.cells or {}).get("status") != "complete":
            raise InputError(f"{result.folder} has no complete cell analysis: run `cervixfm analyze --cells` on the "
                             "slide before indexing its cells.")
        from ..cells.index import cell_entries

        return cell_entries(result)
    fs = result.read_features()
    boxes = np.asarray(result.tiles, np.int64).reshape(-1, 4)
    if len(fs) != len(boxes) or not np.array_equal(fs.coords, boxes[:, :2]):
        raise InputError(f"{result.folder}: features.h5 ({len(fs)} rows) and tiles.npz ({len(boxes)} tiles) do not "
                         "describe the same tiles. Re-run the analysis with --overwrite.")
    labels = scores = None
    for name, head in result.heads.items():
        probs = result.tile_outputs.get(f"{name}.probs")
        if head.get("role") == "tile-classifier" and probs is not None and len(probs) == len(boxes):
            classes = head.get("classes") or [str(i) for i in range(probs.shape[1])]
            labels = [classes[i] for i in probs.argmax(axis=1)]
            scores = probs.max(axis=1)
            break
    rows = RowTable.from_columns(source="tile", slide=str(result.slide["path"]), boxes=boxes, label=labels,
                                 score=scores, n=len(boxes))
    return fs.features, rows


def add_result(index: CellIndex, result, what: str = "tiles") -> int:
    """Add (or replace) the tiles or cells of one analysed slide; returns how many entries it now has."""
    identity = identity_of_result(result)
    features, rows = result_entries(result, what)
    index.check_dim(features.shape[1], f"the {what} features of {result.folder}")
    index.set_backbone(identity)
    index.set_tile(result_tile(result, what))
    slide = str(result.slide["path"])
    if slide in index.slides():
        index.remove_slide(slide)
    index.add(features, rows, backbone=identity)
    return len(features)


def build_slide_index(results: Iterable[str | os.PathLike], out: str | os.PathLike, dtype: str = "float32",
                      overwrite: bool = False, append: bool = False, what: str = "tiles",
                      progress: Callable[[Path, int], None] | None = None, **create_options) -> CellIndex:
    """An index of the tiles (or cells) of every analysed slide in ``results`` (result folders or ``analyze --out``
    folders). ``append`` adds to an existing index at ``out`` (replacing slides already in it)."""
    from ..pipeline.results import load_result

    folders = find_results(results)
    loaded = [load_result(f) for f in folders]
    if append and (Path(out) / "manifest.json").is_file():
        index = CellIndex.open(out)
    else:
        first = loaded[0]
        features, _ = result_entries(first, what)
        index = CellIndex.create(out, features.shape[1], backbone=identity_of_result(first),
                                 kind="cells" if what == "cells" else "slides", tile=result_tile(first, what),
                                 dtype=dtype, overwrite=overwrite, **create_options)
    for result in loaded:
        n = add_result(index, result, what)
        if progress:
            progress(result.folder, n)
    index.save()
    return index


def query_crop(slide_path: str | os.PathLike, x: float, y: float, size: int, mpp: float,
               slide_mpp: float | None = None) -> np.ndarray:
    """A ``size`` x ``size`` RGB crop at ``mpp`` µm/px centred on level-0 (x, y), read from the best pyramid level.

    This is how the index's tiles were cut (``size`` px at the analysis MPP), so the query sees the same scale.
    """
    from ..slides import open_slide

    with open_slide(slide_path, mpp=slide_mpp) as slide:
        w, h = slide.dimensions
        if not (0 <= x < w and 0 <= y < h):
            raise InputError(f"({x:g}, {y:g}) lies outside {Path(slide_path).name} ({w} x {h} px level 0).")
        w0 = size * mpp / slide.mpp[0]
        h0 = size * mpp / slide.mpp[1]
        return slide.read_scaled(x - w0 / 2, y - h0 / 2, w0, h0, size, size)
