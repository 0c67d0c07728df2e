"""Train a cell-classifier head on the cells of analysed slides, labelled by ground-truth cells (QuPath GeoJSON).

The cells come from the cell stage (``cells.h5``: embeddings of crops centred on each nucleus); each one takes the
class of the ground-truth cell whose nucleus holds its nucleus centre. The head is the published linear probe
(``training.probe_training``: zero-initialised linear layer on frozen features, AdamW, cosine schedule, early stop
on the training loss) and is saved as a ``linear`` head file with its class names, colours and normal classes, ready
to go into a bundle with role ``cell-classifier``::

    cervixfm train-cell-classifier out/slide1 out/slide2 --out heads/cells.safetensors
    cervixfm bundle init BUNDLE --checkpoint CervixFM.pth --head cells:cell-classifier:heads/cells.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.cells.classify import normal_mask
from core.cells.evaluate import read_truth, truth_for_centres
from core.errors import CervixFMError, InputError

from .probe_training import ProbeOptions, train_linear_probe


@dataclasses.dataclass
class LabelledCells:
    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64 into classes
    classes: list[str]
    colors: list[list[int]] | None
    slides: np.ndarray  # (N,) int64: which input each cell came from
    centres: np.ndarray  # (N, 2) level-0 nucleus centres

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist()))


def class_order(names: Sequence[str]) -> list[str]:
    """Classes in the synthetic slides' order when they are those, else alphabetically."""
    from core.synthetic.classes import CLASS_NAMES

    present = set(names)
    if present <= set(CLASS_NAMES):
        return [c for c in CLASS_NAMES if c in present]
    return sorted(present)


def labelled_cells(cell_files: Sequence, truths: Sequence, max_distance_um: float = 3.0,
                   classes: Sequence[str] | None = None, features: str = "embeddings") -> LabelledCells:
    """Cells of each ``cell_files[i]`` (``core.cells.CellFile``) labelled by ``truths[i]`` (``TruthCells``);
    cells with no ground-truth nucleus at their centre are left out. ``features``: ``"embeddings"`` (the
    backbone's) or ``"measurements"`` (the detector's hand-crafted ones, for comparison)."""
    if len(cell_files) != len(truths):
        raise CervixFMError(f"{len(cell_files)} cell results but {len(truths)} ground-truth files: give one each.")
    names = [n for t in truths for n in t.names if n]
    classes = list(classes) if classes is not None else class_order(names)
    colors: dict[str, list[int]] = {}
    for t in truths:
        for k, v in t.colors.items():
            colors.setdefault(k, v)
    feats, labels, slides, centres = [], [], [], []
    for k, (cf, truth) in enumerate(zip(cell_files, truths)):
        table = cf.table
        if features == "measurements":
            values = np.nan_to_num(table.measurements.astype(np.float32), posinf=0.0, neginf=0.0)
        elif table.embeddings is None:
            raise InputError(f"{cf.path} holds no embeddings (the cells were localised without a model); re-run "
                             "the cell stage with a backbone.")
        else:
            values = table.embeddings
        mpp = float(cf.meta.get("slide_mpp", [0.25])[0])
        match = truth_for_centres(table.centres, truth, max_distance_um / mpp)
        lookup = {c: i for i, c in enumerate(classes)}
        lab = np.array([lookup.get(truth.names[m], -1) if m >= 0 else -1 for m in match], np.int64)
        keep = lab >= 0
        feats.append(values[keep])
        labels.append(lab[keep])
        slides.append(np.full(int(keep.sum()), k, np.int64))
        centres.append(table.centres[keep])
    dim = feats[0].shape[1] if feats else 0
    return LabelledCells(
        np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
        np.concatenate(labels) if labels else np.zeros(0, np.int64), classes,
        [colors.get(c, [160, 160, 160]) for c in classes] if colors else None,
        np.concatenate(slides) if slides else np.zeros(0, np.int64),
        np.concatenate(centres) if centres else np.zeros((0, 2)))


def train_cell_classifier(cells: LabelledCells, opts: ProbeOptions | None = None, standardize: bool = True,
                          log: Callable[[str], None] = lambda _m: None):
    """(LinearHead, FitResult): the published linear probe on the labelled cells' embeddings.

    ``standardize`` trains on embeddings scaled to zero mean and unit variance per dimension (training cells'
    statistics) and folds the scaling back into the head, so the saved head takes raw embeddings like any other.
    The published probe does not standardise; on untrained or weakly trained backbones, whose CLS dimensions
    vary little around large means, its zero-initialised head then stays on the majority class for the few
    epochs early stopping allows (benchmarks/cells_eval.py reports both).
    """
    opts = opts or ProbeOptions()
    present = np.unique(cells.labels)
    if len(present) < 2:
        raise CervixFMError(f"Training a cell classifier needs cells of at least two classes; found "
                            f"{cells.class_counts()}.")
    x = np.asarray(cells.features, np.float32)
    if not standardize:
        return train_linear_probe(x, cells.labels, len(cells.classes), opts, log)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    head, fit = train_linear_probe((x - mean) / std, cells.labels, len(cells.classes), opts, log)
    fold_standardisation(head, mean, std)
    return head, fit


def fold_standardisation(head, mean: np.ndarray, std: np.ndarray) -> None:
    """Make a head trained on ``(x - mean) / std`` take ``x``: W' = W / std, b' = b - W' mean."""
    import torch

    with torch.no_grad():
        w = head.classifier.weight / torch.as_tensor(std, dtype=head.classifier.weight.dtype)
        head.classifier.bias -= w @ torch.as_tensor(mean, dtype=w.dtype)
        head.classifier.weight.copy_(w)


def save_cell_classifier(path: str | Path, head, classes: Sequence[str], colors=None,
                         normal_classes: Sequence[str] | None = None, info: dict | None = None) -> Path:
    """A ``linear`` head file whose info names its role and normal classes (used for the abnormality score)."""
    from core.models.heads import save_head

    normal = normal_mask(classes, normal_classes)
    details = {"role": "cell-classifier", "normal_classes": [c for c, n in zip(classes, normal) if n],
               **(info or {})}
    return save_head(path, "linear", head, head.config(), classes, colors, details)


# --------------------------------------------------------------------------------------------------------- CLI
def handle(args: argparse.Namespace) -> int:
    from core.cells import load_cells
    from core.pipeline.results import load_result

    cell_files, truths = [], []
    truth_paths = list(args.truth or [])
    if truth_paths and len(truth_paths) != len(args.results):
        raise CervixFMError(f"--truth lists {len(truth_paths)} files for {len(args.results)} results; give one each.")
    for k, folder in enumerate(args.results):
        cell_files.append(load_cells(Path(folder)))
        if truth_paths:
            truth = Path(truth_paths[k])
        else:
            slide = Path(load_result(folder).slide["path"])
            truth = slide.with_suffix(".geojson")
            if not truth.is_file():
                raise InputError(f"No ground truth for {folder}: {truth} does not exist; pass --truth.")
        truths.append(read_truth(truth))
    cells = labelled_cells(cell_files, truths, args.max_distance_um)
    print(f"{len(cells)} labelled cells: " + ", ".join(f"{c} {n}" for c, n in cells.class_counts().items()),
          file=sys.stderr)
    opts = ProbeOptions(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, seed=args.seed)
    head, fit = train_cell_classifier(cells, opts, standardize=not args.no_standardize,
                                      log=lambda m: print(m, file=sys.stderr))
    normal = [c.strip() for c in args.normal_classes.split(",")] if args.normal_classes else None
    model = cell_files[0].meta.get("model") or {}
    path = save_cell_classifier(args.out, head, cells.classes, cells.colors, normal,
                                {"backbone": model.get("name"), "backbone_sha256": model.get("sha256"),
                                 "trained_on": [str(r) for r in args.results], "cells": len(cells),
                                 "best_epoch": fit.best_epoch, "standardized": not args.no_standardize})
    print(f"wrote {path} ({len(cells.classes)} classes, best epoch {fit.best_epoch})")
    return 0
