"""Ground truth of a synthetic slide as QuPath GeoJSON: every cell with its outline, nucleus and class.

QuPath's dialect: a FeatureCollection of ``cell`` objects, each with ``geometry`` (the cell), a top-level
``nucleusGeometry``, ``properties.classification`` {name, color} and ``measurements``. Coordinates are level-0
pixels of the TIFF (our files have no bounds offset). Outlines come from the same radius tables the renderer
draws, sampled around each centre, so rings are closed, simple and valid, which recent QuPath insists on. The file
is streamed feature by feature (through ``core.annotations``' FeatureCollection writer) so a slide with a million
cells never builds one huge string.
"""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import numpy as np

from .classes import CLASSES
from .layout import Layout
from .shapes import Outline, polygon, radius_table

CELL_VERTICES = 48
NUCLEUS_VERTICES = 32


def _ring(points: np.ndarray) -> list[list[float]]:
    pts = np.round(points, 2)
    ring = pts.tolist()
    ring.append(ring[0])
    return ring


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def cell_features(layout: Layout, seed: int) -> Iterator[dict]:
    """One QuPath cell Feature per laid-out cell, in layout order, with deterministic UUIDs."""
    rng = np.random.default_rng([seed, 0x6E0])
    mpp2 = layout.mpp * layout.mpp
    for rec in layout.cells:
        cls = CLASSES[int(rec["cls"])]
        cell_o, nuc_o = Outline.of(rec, "c_"), Outline.of(rec, "n_")
        cell = polygon(cell_o, radius_table(cell_o), CELL_VERTICES)
        nucleus = polygon(nuc_o, radius_table(nuc_o), NUCLEUS_VERTICES)
        a_cell, a_nuc = _area(cell) * mpp2, _area(nucleus) * mpp2
        yield {
            "type": "Feature",
            "id": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
            "geometry": {"type": "Polygon", "coordinates": [_ring(cell)]},
            "nucleusGeometry": {"type": "Polygon", "coordinates": [_ring(nucleus)]},
            "properties": {
                "objectType": "cell",
                "classification": {"name": cls.name, "color": list(cls.color)},
                "isLocked": False,
                "measurements": {
                    "Cell: Area µm^2": round(a_cell, 2),
                    "Nucleus: Area µm^2": round(a_nuc, 2),
                    "Cell: Nucleus/Cell area ratio": round(a_nuc / a_cell, 4) if a_cell else 0.0,
                    "Perinuclear halo": 1.0 if rec["h_r"] > 0 else 0.0,
                    "Group": float(rec["group"]),
                },
            },
        }


def write_ground_truth(path: str | os.PathLike, layout: Layout, seed: int) -> int:
    """Write the FeatureCollection atomically; returns the number of cells written."""
    from ..annotations.geojson import write_feature_collection

    return write_feature_collection(path, cell_features(layout, seed))
