"""Cells out of CervixFM: QuPath GeoJSON (cell objects with nuclei, classes and measurements) and CSV tables.

QuPath reads ``objectType: cell`` features with a ``nucleusGeometry`` and ``classification {name, color}``; the
measurements map carries the localisation measurements, the class probabilities and the abnormality score, so
QuPath's measurement tables and classifiers can use them. Coordinates are level-0 pixels, shifted by the slide's
``openslide.bounds`` offset because QuPath shows bounded slides cropped to those bounds. Ids are UUIDs derived from
the slide name and the cell's position, so re-running an analysis gives the same ids. Files are streamed cell by
cell (a slide can hold 100 000 cells) and written atomically.
"""

from __future__ import annotations

import csv
import math
import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..io import atomic_write
from .table import CellTable

_NAMESPACE = uuid.UUID("5b0c7a4e-3d1f-4e0a-9a55-7c1e2f0d9b61")
UNCLASSIFIED_COLOR = [160, 160, 160]


def cell_ids(table: CellTable, slide_name: str) -> list[str]:
    return [str(uuid.uuid5(_NAMESPACE, f"{slide_name}:{x:.2f}:{y:.2f}")) for x, y in table.centres]


def _ring(coords: np.ndarray, dx: float, dy: float) -> list[list[float]]:
    """A closed ring in the file's frame, two decimals (a hundredth of a pixel)."""
    ring = np.round(np.asarray(coords, np.float64) - (dx, dy), 2).tolist()
    ring.append(ring[0])
    return ring


def _number(v: float) -> float | None:
    v = float(v)
    return round(v, 5) if math.isfinite(v) else None


def cell_features(table: CellTable, slide_name: str, head: str | None = None, classes: Sequence[str] = (),
                  colors: Sequence[Sequence[int]] | None = None, offset: tuple[float, float] = (0.0, 0.0),
                  ids: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """One QuPath cell Feature per cell; classified by ``head`` (its arg-max class) when given."""
    ids = ids if ids is not None else cell_ids(table, slide_name)
    probs = table.heads[head]["probs"] if head else None
    abnormality = table.heads[head]["abnormality"] if head else None
    dx, dy = offset
    for i in range(len(table)):
        measurements = {name: _number(v) for name, v in zip(table.measurement_names, table.measurements[i])}
        measurements = {k: v for k, v in measurements.items() if v is not None}
        measurements["Detection score"] = round(float(table.detector_score[i]), 4)
        props: dict[str, Any] = {"objectType": "cell", "isLocked": False, "measurements": measurements}
        if probs is not None:
            c = int(np.argmax(probs[i]))
            color = list(colors[c]) if colors else UNCLASSIFIED_COLOR
            props["classification"] = {"name": classes[c], "color": [int(v) for v in color]}
            for k, name in enumerate(classes):
                measurements[f"Class probability: {name}"] = round(float(probs[i, k]), 5)
            measurements["Abnormality score"] = round(float(abnormality[i]), 5)
        yield {
            "type": "Feature", "id": ids[i],
            "geometry": {"type": "Polygon", "coordinates": [_ring(table.cell_ring(i), dx, dy)]},
            "nucleusGeometry": {"type": "Polygon", "coordinates": [_ring(table.nucleus_ring(i), dx, dy)]},
            "properties": props,
        }


def write_geojson(path: str | os.PathLike, table: CellTable, slide_name: str, head: str | None = None,
                  classes: Sequence[str] = (), colors: Sequence[Sequence[int]] | None = None,
                  offset: tuple[float, float] = (0.0, 0.0), ids: Sequence[str] | None = None) -> Path:
    """Stream the cells into a QuPath FeatureCollection (through the annotations' writer: one file format, one
    writer)."""
    from ..annotations.geojson import write_feature_collection

    path = Path(path)
    write_feature_collection(path, cell_features(table, slide_name, head, classes, colors, offset, ids))
    return path


def write_csv(path: str | os.PathLike, table: CellTable, ids: Sequence[str],
              head: str | None = None, classes: Sequence[str] = (), order: Sequence[int] | None = None,
              extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """One row per cell (in ``order`` when given, with its 1-based rank): id, nucleus centre, outline box, crop
    box, measurements, class, class probabilities and abnormality."""
    path = Path(path)
    boxes = table.boxes()
    probs = table.heads[head]["probs"] if head else None
    abnormality = table.heads[head]["abnormality"] if head else None
    header = (["rank"] if order is not None else []) + [
        "id", "x", "y", "box_x", "box_y", "box_w", "box_h", "crop_x", "crop_y", "crop_w", "crop_h",
        "tile", "truncated", *table.measurement_names]
    if probs is not None:
        header += ["class", *[f"p_{c}" for c in classes], "abnormality"]
    header += list(extra or {})
    rows = order if order is not None else range(len(table))
    with atomic_write(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for r, i in enumerate(rows):
            row: list[Any] = [r + 1] if order is not None else []
            row += [ids[i], f"{table.centres[i, 0]:.2f}", f"{table.centres[i, 1]:.2f}",
                    *(f"{v:.1f}" for v in boxes[i]), *(f"{v:.1f}" for v in table.crop_boxes[i]),
                    int(table.tile_index[i]), int(table.truncated[i]),
                    *(f"{v:.6g}" for v in table.measurements[i])]
            if probs is not None:
                row += [classes[int(np.argmax(probs[i]))], *(f"{v:.5f}" for v in probs[i]),
                        f"{abnormality[i]:.5f}"]
            row += [f"{v[i]:.6g}" for v in (extra or {}).values()]
            writer.writerow(row)
    return path
