"""Slides as bags of tile features for multiple-instance learning: tile-feature files plus a slide label table.

``--features DIR`` holds one ``<slide_id>.h5`` per slide in the CLAM/TRIDENT layout that ``core.pipeline`` writes;
``--labels CSV`` has a header with ``slide_id`` and ``label`` columns. Labels may be class names or integers; class
order is ``--classes`` when given, else 0..C-1 for integer labels, else the sorted names (so in a binary problem
the positive class, whose AUROC is reported, is the second one: pass ``--classes NEGATIVE,POSITIVE`` to be sure).
Bags are read once and kept in memory up to a budget, beyond which they are re-read from disk when needed.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import InputError

FEATURE_SUFFIXES = (".h5", ".hdf5")


@dataclasses.dataclass
class Bag:
    slide_id: str
    path: Path
    label: int  # -1 when unknown (prediction)
    n_tiles: int
    dim: int


@dataclasses.dataclass
class BagSet:
    bags: list[Bag]
    classes: list[str]
    memory_budget: int = 2 << 30  # bytes of features kept in memory
    _cache: dict[int, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
    _cached_bytes: int = 0

    def __len__(self) -> int:
        return len(self.bags)

    @property
    def labels(self) -> np.ndarray:
        return np.array([b.label for b in self.bags], dtype=np.int64)

    @property
    def dim(self) -> int:
        return self.bags[0].dim if self.bags else 0

    def features(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        from core.pipeline.feature_file import read_features

        x = read_features(self.bags[i].path).features
        if self._cached_bytes + x.nbytes <= self.memory_budget:
            self._cache[i] = x
            self._cached_bytes += x.nbytes
        return x

    def coords(self, i: int) -> np.ndarray:
        from core.pipeline.feature_file import read_features

        return read_features(self.bags[i].path).coords


def feature_files(source: str | os.PathLike) -> dict[str, Path]:
    """``slide_id -> file`` for one feature file or every ``.h5`` in a folder (not recursive)."""
    source = Path(source)
    if source.is_file():
        return {source.stem: source}
    if not source.is_dir():
        raise InputError(f"{source} does not exist (expected a tile-feature .h5 file or a folder of them).")
    found = {p.stem: p for p in sorted(source.iterdir())
             if p.is_file() and p.suffix.lower() in FEATURE_SUFFIXES and not p.name.startswith(".")}
    if not found:
        raise InputError(f"{source} contains no tile-feature files (<slide_id>.h5). Extract features first.")
    return found


def read_slide_labels(path: str | os.PathLike) -> list[tuple[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Label table {path} does not exist.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "slide_id" not in fields or "label" not in fields:
                raise InputError(f"{path} needs a header with the columns slide_id and label (found: "
                                 f"{', '.join(fields) or 'nothing'}).")
            rows = []
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                if not row["slide_id"] and not row["label"]:
                    continue
                if not row["slide_id"] or not row["label"]:
                    raise InputError(f"{path} line {line}: slide_id and label must both be filled in.")
                rows.append((row["slide_id"], row["label"]))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a readable CSV table: {exc}") from exc
    if not rows:
        raise InputError(f"{path} lists no slides.")
    seen: dict[str, str] = {}
    for slide, label in rows:
        if slide in seen and seen[slide] != label:
            raise InputError(f"{path}: slide {slide} is listed with two labels ({seen[slide]} and {label}).")
        seen[slide] = label
    return list(seen.items())


def resolve_classes(labels: Sequence[str], classes: Sequence[str] | None) -> tuple[list[str], list[int]]:
    """(class names in output order, class index of each label)."""
    if classes:
        names = [c.strip() for c in classes]
        if len(set(names)) != len(names) or len(names) < 2:
            raise InputError(f"--classes needs at least two distinct names, got {list(classes)}.")
        index = {n: i for i, n in enumerate(names)}
        out = []
        for label in labels:
            if label in index:
                out.append(index[label])
            elif label.lstrip("-").isdigit() and 0 <= int(label) < len(names):
                out.append(int(label))
            else:
                raise InputError(f"Label {label!r} is not one of --classes {', '.join(names)}.")
        return names, out
    if all(label.lstrip("-").isdigit() for label in labels):
        values = [int(label) for label in labels]
        if min(values) < 0:
            raise InputError("Integer slide labels must be class indices 0..C-1.")
        names = [str(i) for i in range(max(values) + 1)]
        return names, values
    names = sorted(set(labels))
    index = {n: i for i, n in enumerate(names)}
    return names, [index[label] for label in labels]


def _probe_shape(path: Path) -> tuple[int, int]:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if "features" not in h5:
                raise InputError(f"{path} has no 'features' dataset: not a tile-feature file.")
            shape = h5["features"].shape
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"Cannot read feature file {path}: {exc}") from exc
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2:
        raise InputError(f"{path}: features of shape {shape} are not (N, D).")
    return int(shape[0]), int(shape[1])


def check_bags(bags: Sequence[Bag]) -> None:
    empty = [b.slide_id for b in bags if b.n_tiles == 0]
    if empty:
        raise InputError(f"{len(empty)} slide(s) have no tiles in their feature file: {', '.join(empty[:5])}. "
                         "Re-extract them or leave them out of the label table.")
    dims = sorted({b.dim for b in bags})
    if len(dims) > 1:
        by_dim = {d: [b.slide_id for b in bags if b.dim == d][:3] for d in dims}
        raise InputError(f"Feature files have different feature sizes {by_dim}: they come from different backbones.")


def load_labelled_bags(features: str | os.PathLike, labels_csv: str | os.PathLike,
                       classes: Sequence[str] | None = None) -> tuple[BagSet, list[str]]:
    """(bags of every labelled slide, notes about feature files without a label)."""
    files = feature_files(features)
    rows = read_slide_labels(labels_csv)
    missing = [slide for slide, _ in rows if slide not in files]
    if missing:
        raise InputError(f"{len(missing)} slide(s) in {labels_csv} have no feature file in {features}: "
                         f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}.")
    names, indices = resolve_classes([label for _, label in rows], classes)
    bags = []
    for (slide, _), label in zip(rows, indices):
        n, d = _probe_shape(files[slide])
        bags.append(Bag(slide, files[slide], label, n, d))
    check_bags(bags)
    unlabelled = sorted(set(files) - {slide for slide, _ in rows})
    notes = [f"{len(unlabelled)} feature file(s) without a label were ignored: {', '.join(unlabelled[:5])}"] if unlabelled else []
    return BagSet(bags, names), notes


def load_unlabelled_bags(features: str | os.PathLike) -> BagSet:
    files = feature_files(features)
    bags = [Bag(slide, path, -1, *_probe_shape(path)) for slide, path in files.items()]
    return BagSet(bags, [])
