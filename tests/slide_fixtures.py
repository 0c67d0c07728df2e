"""Small synthetic slides shared by the slide, synthetic and CLI tests (generated once per test session)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CACHE: dict = {}


@dataclass
class GroundTruth:
    path: Path
    geojson: Path
    info: object  # core.synthetic.SyntheticSlide
    features: list

    def cells(self, name: str | None = None) -> list:
        return [f for f in self.features if name is None or f["properties"]["classification"]["name"] == name]

    def nucleus_centres(self) -> np.ndarray:
        from shapely.geometry import shape

        return np.array([shape(f["nucleusGeometry"]).centroid.coords[0] for f in self.features])


def synthetic(root: Path, name: str, **kwargs) -> GroundTruth:
    """Generate (once per session and arguments) a synthetic slide under ``root``."""
    from core.synthetic import generate_slide

    key = (name, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        path = root / name
        info = generate_slide(path, **kwargs)
        with open(info.geojson, encoding="utf-8") as fh:
            features = json.load(fh)["features"]
        _CACHE[key] = GroundTruth(path, Path(info.geojson), info, features)
    return _CACHE[key]


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64).mean(axis=-1)


def background_points(truth: GroundTruth, width: int, height: int, n: int = 300, clearance: float = 40.0,
                      seed: int = 0) -> np.ndarray:
    """Random level-0 points at least ``clearance`` px away from every ground-truth cell."""
    from shapely import STRtree
    from shapely.geometry import Point, shape

    polys = [shape(f["geometry"]) for f in truth.features]
    tree = STRtree(polys) if polys else None
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        x, y = rng.uniform(clearance, width - clearance), rng.uniform(clearance, height - clearance)
        if tree is None or not len(tree.query(Point(x, y).buffer(clearance), predicate="intersects")):
            out.append((x, y))
    return np.array(out)
