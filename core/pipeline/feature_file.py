"""Tile-feature files in the CLAM/TRIDENT HDF5 layout, which other MIL tools read directly.

Datasets: ``features`` (N, D) float32 and ``coords`` (N, 2) int64 level-0 top-left (x, y), both chunked and resizable.
Attributes (on the file and, as CLAM expects, on ``coords``): ``patch_size``, ``patch_size_level0``,
``level0_magnification``, ``target_magnification``, ``level0_width``, ``level0_height``, ``encoder`` and provenance
(checkpoint hash, MPP, software version). Files are written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import InputError
from ..io import atomic_write


@dataclasses.dataclass
class FeatureSet:
    features: np.ndarray  # (N, D) float32
    coords: np.ndarray  # (N, 2) int64, level-0 (x, y) of each tile's top-left corner
    attrs: dict[str, Any]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.features)


def _clean_attr(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if value is None:
        return ""
    return value


def write_features(
    path: str | os.PathLike,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    attrs: Mapping[str, Any] | None = None,
    dim: int | None = None,
) -> int:
    """Stream ``(features, coords)`` chunks into a new HDF5 file; returns the row count. Atomic."""
    import h5py

    path = Path(path)
    rows = 0
    with atomic_write(path, "wb") as handle:
        with h5py.File(handle, "w") as h5:
            feats = coords = None
            for f, c in chunks:
                f = np.asarray(f, dtype=np.float32)
                c = np.asarray(c, dtype=np.int64).reshape(-1, 2)
                if len(f) != len(c):
                    raise ValueError(f"{len(f)} feature rows but {len(c)} coordinates")
                if feats is None:
                    d = f.shape[1] if f.ndim == 2 else dim
                    feats = h5.create_dataset("features", (0, d), np.float32, maxshape=(None, d), chunks=(256, d))
                    coords = h5.create_dataset("coords", (0, 2), np.int64, maxshape=(None, 2), chunks=(1024, 2))
                if not len(f):
                    continue
                feats.resize(rows + len(f), axis=0)
                coords.resize(rows + len(c), axis=0)
                feats[rows:] = f
                coords[rows:] = c
                rows += len(f)
            if feats is None:
                d = dim or 0
                feats = h5.create_dataset("features", (0, d), np.float32, maxshape=(None, d))
                coords = h5.create_dataset("coords", (0, 2), np.int64, maxshape=(None, 2))
            for key, value in (attrs or {}).items():
                h5.attrs[key] = _clean_attr(value)
                coords.attrs[key] = _clean_attr(value)
    return rows


def read_features(path: str | os.PathLike) -> FeatureSet:
    """Load a CLAM/TRIDENT feature file (ours or another tool's) with clear errors for anything else."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Feature file {path} does not exist.")
    try:
        with h5py.File(path, "r") as h5:
            if "features" not in h5:
                raise InputError(f"{path} has no 'features' dataset: not a tile-feature file.")
            features = np.asarray(h5["features"][...], dtype=np.float32)
            if features.ndim == 3 and features.shape[0] == 1:  # some tools store (1, N, D)
                features = features[0]
            coords = np.asarray(h5["coords"][...]) if "coords" in h5 else np.zeros((len(features), 2), np.int64)
            if coords.ndim == 3 and coords.shape[0] == 1:
                coords = coords[0]
            attrs = {k: _decode(v) for k, v in h5.attrs.items()}
            if "coords" in h5:
                attrs = {**{k: _decode(v) for k, v in h5["coords"].attrs.items()}, **attrs}
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"Cannot read feature file {path}: {exc}") from exc
    if features.ndim != 2 or coords.shape != (len(features), 2):
        raise InputError(f"{path}: features {features.shape} and coords {coords.shape} do not form (N, D) and (N, 2).")
    return FeatureSet(features, coords.astype(np.int64), attrs, path)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
