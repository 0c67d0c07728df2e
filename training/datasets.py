"""Labelled cell-crop data sets in the two published layouts, checked before any work starts.

Layouts (as the published downstream code reads them)::

    DATA/train/  DATA/test/  DATA/train.npy  DATA/test.npy     # a given split
    DATA/data/   DATA/data_label.npy                          # one folder, split 80/20 per class by --seed

Each ``.npy`` holds one row per image: ``[file name relative to its folder, label]``, labels as integer strings
(``"0"`` … ``"C-1"``). Every problem a user can cause (wrong table shape, a label outside ``--num_class``, missing
image files, repeated names) is reported with the file and rows concerned before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import InputError

from .label_efficiency import label_efficiency_indices, split_train_test


@dataclasses.dataclass
class LabelledImages:
    root: Path  # folder the names are relative to
    names: list[str]
    labels: np.ndarray  # (N,) int64 class indices
    raw_labels: list[str]  # labels as written in the table: the published sampling orders classes by these strings

    def __len__(self) -> int:
        return len(self.names)

    @property
    def paths(self) -> list[Path]:
        return [self.root / n for n in self.names]

    def subset(self, indices: Sequence[int]) -> "LabelledImages":
        idx = np.asarray(indices, dtype=np.int64)
        return LabelledImages(self.root, [self.names[i] for i in idx], self.labels[idx],
                              [self.raw_labels[i] for i in idx])

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()


@dataclasses.dataclass
class DatasetSplits:
    layout: str  # "train-test" or "single-folder"
    train: LabelledImages
    test: LabelledImages


def _preview(items: Sequence, limit: int = 5) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


def read_label_table(path: str | os.PathLike, num_classes: int | None, allow_pickle: bool = False
                     ) -> tuple[list[str], list[str], np.ndarray]:
    """(file names, label strings, int labels) of a ``[file name, label]`` ``.npy`` table."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Label table {path} does not exist.")
    try:
        table = np.load(path, allow_pickle=allow_pickle)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise InputError(
                f"{path} stores Python objects, which can run code when loaded. Re-save it as a string array "
                "(np.save(path, np.asarray(rows, dtype=str))), or pass --trust-pickled-labels if you trust its source."
            ) from exc
        raise InputError(f"{path} is not a readable .npy table: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{path} is not a readable .npy table: {exc}") from exc
    if not isinstance(table, np.ndarray) or table.ndim != 2 or table.shape[1] != 2:
        shape = getattr(table, "shape", None)
        raise InputError(f"{path} has shape {shape}; expected one row per image, [file name, label] (shape (N, 2)).")
    if len(table) == 0:
        raise InputError(f"{path} has no rows.")
    names = [str(v) for v in table[:, 0]]
    raw = [str(v).strip() for v in table[:, 1]]
    labels = np.empty(len(raw), dtype=np.int64)
    bad = []
    for i, value in enumerate(raw):
        try:
            labels[i] = int(value)
        except ValueError:
            bad.append(f"row {i} ({names[i]}): {value!r}")
    if bad:
        raise InputError(f"{path}: labels must be integer class indices; not integers: {_preview(bad)}.")
    if num_classes is not None:
        out = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if len(out):
            rows = [f"row {i} ({names[i]}): {labels[i]}" for i in out]
            raise InputError(f"{path}: labels outside 0..{num_classes - 1} (--num_class {num_classes}): "
                             f"{_preview(rows)}. Check --num_class or the table.")
    seen: dict[str, int] = {}
    repeated = []
    for i, name in enumerate(names):
        if name in seen:
            repeated.append(name)
        seen[name] = i
    if repeated:
        raise InputError(f"{path}: file names listed more than once: {_preview(repeated)}. Each image needs one row.")
    return names, raw, labels


def check_images_exist(images: LabelledImages, table: Path) -> None:
    missing = [n for n, p in zip(images.names, images.paths) if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} image(s) listed in {table} are missing from {images.root}: "
                         f"{_preview(missing)}.")


def load_table(folder: Path, table: Path, num_classes: int | None, allow_pickle: bool = False) -> LabelledImages:
    if not folder.is_dir():
        raise InputError(f"Image folder {folder} does not exist (it should hold the images listed in {table}).")
    names, raw, labels = read_label_table(table, num_classes, allow_pickle)
    images = LabelledImages(folder, names, labels, raw)
    check_images_exist(images, table)
    return images


def detect_layout(data_path: Path) -> str:
    if (data_path / "train.npy").is_file() or (data_path / "test.npy").is_file():
        return "train-test"
    if (data_path / "data_label.npy").is_file():
        return "single-folder"
    raise InputError(
        f"{data_path} is not a data set folder: expected train/ test/ train.npy test.npy, or data/ data_label.npy "
        "(tables of [file name, label] rows)."
    )


def load_dataset(data_path: str | os.PathLike, num_classes: int | None, seed: int | None = None,
                 allow_pickle: bool = False, need: tuple[str, ...] = ("train", "test")) -> DatasetSplits:
    """Both splits of a data set, validated. ``need`` names the splits that must exist (a test-only run needs
    only ``test``; the other is then empty)."""
    data_path = Path(data_path)
    if not data_path.is_dir():
        raise InputError(f"Data set folder {data_path} does not exist.")
    layout = detect_layout(data_path)
    if layout == "single-folder":
        everything = load_table(data_path / "data", data_path / "data_label.npy", num_classes, allow_pickle)
        train_idx, test_idx = split_train_test(everything.raw_labels, seed)
        return DatasetSplits(layout, everything.subset(train_idx), everything.subset(test_idx))
    splits = {}
    for split in ("train", "test"):
        table = data_path / f"{split}.npy"
        if split in need or table.is_file():
            splits[split] = load_table(data_path / split, table, num_classes, allow_pickle)
        else:
            splits[split] = LabelledImages(data_path / split, [], np.zeros(0, np.int64), [])
    return DatasetSplits(layout, splits["train"], splits["test"])


def label_efficient(images: LabelledImages, ratio: float, seed: int | None) -> LabelledImages:
    """The training rows a label-efficiency run uses (all of them at ratio 1)."""
    return images.subset(label_efficiency_indices(images.raw_labels, ratio, seed))
