"""Reference atlases: labelled cell crops in a cell index, and a k-NN vote that suggests a label for a query.

An atlas is a :class:`~core.retrieval.CellIndex` of kind ``atlas`` whose rows carry the class name as label and the
image file (relative to the data set folder, recorded in ``info["data_root"]``) as name. Its search is the published
retrieval protocol, so querying an atlas with held-out crops reproduces the published top-k and MV@k numbers.

The suggested label is the majority among the ``k`` nearest labelled neighbours, ties going to the label met first
(the nearest), exactly the published MV@k rule; its confidence is the winner's share of the ``k`` votes.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CervixFMError, InputError
from ..metrics import majority_vote
from .index import CellIndex, SearchResult
from .rows import RowTable


@dataclasses.dataclass
class LabelSuggestion:
    label: str
    confidence: float  # share of the k neighbours voting for ``label``
    votes: dict[str, int]  # label -> neighbours among the k, most votes first
    neighbours: list[dict[str, Any]]  # the k neighbours' records, nearest first

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def atlas_from_features(out: str | os.PathLike, features: np.ndarray, names: Sequence[str], labels: Sequence[int],
                        class_names: Sequence[str], backbone: dict[str, Any] | None = None,
                        data_root: str | os.PathLike | None = None, overwrite: bool = False,
                        exact_limit: int | None = None) -> CellIndex:
    """An atlas of already computed features (N, D); ``labels`` are class indices into ``class_names``."""
    labels = np.asarray(labels, np.int64)
    features = np.asarray(features, np.float32)
    if len(features) != len(names) or len(labels) != len(names):
        raise InputError(f"{len(features)} features, {len(names)} names and {len(labels)} labels: one each per image.")
    if len(names) == 0:
        raise InputError("An atlas needs at least one labelled image.")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise InputError(f"Labels must be class indices 0..{len(class_names) - 1} for the {len(class_names)} class "
                         f"names given; found {labels.min()}..{labels.max()}.")
    if len(set(class_names)) != len(class_names) or any(not str(c).strip() for c in class_names):
        raise InputError(f"Class names must be unique and non-empty: {list(class_names)}.")
    extra = {} if exact_limit is None else {"exact_limit": exact_limit}
    info = {"data_root": str(Path(data_root).resolve()) if data_root else None}
    index = CellIndex.create(out, features.shape[1], backbone=backbone, kind="atlas", classes=list(class_names),
                             info=info, overwrite=overwrite, **extra)
    rows = RowTable.from_columns(source="atlas", label=[class_names[i] for i in labels], name=list(names))
    index.add(features, rows)
    index.save()
    return index


def build_atlas(out: str | os.PathLike, paths: Sequence[str | os.PathLike], names: Sequence[str],
                labels: Sequence[int], class_names: Sequence[str], embedder, data_root: str | os.PathLike | None = None,
                overwrite: bool = False, workers: int = 2, progress: Callable[[int], None] | None = None) -> CellIndex:
    """Embed labelled crops with ``embedder`` (:class:`core.retrieval.embedder.ImageEmbedder`) into a new atlas."""
    if len(paths) != len(names) or len(paths) != len(labels):
        raise InputError(f"{len(paths)} images, {len(names)} names and {len(labels)} labels: one each per image.")
    if len(paths) == 0:
        raise InputError("An atlas needs at least one labelled image.")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    features = embedder.embed_files(paths, workers=workers, progress=progress)
    return atlas_from_features(out, features, names, labels, class_names, embedder.identity, data_root, overwrite)


def open_atlas(folder: str | os.PathLike) -> CellIndex:
    """Open an index and make sure it can vote: an atlas, or at least an index whose entries all carry labels."""
    index = CellIndex.open(folder)
    check_labelled(index)
    return index


def check_labelled(index: CellIndex) -> None:
    unlabelled = len(index) - sum(index.label_counts().values())
    if len(index) == 0:
        raise InputError(f"{index.folder} is empty: an atlas needs labelled images.")
    if unlabelled:
        raise InputError(f"{index.folder} is not an atlas: {unlabelled:,} of its {len(index):,} entries have no "
                         "label, so it cannot suggest one. Build an atlas from a labelled data set with "
                         "`cervixfm atlas build --data_path DIR`.")


def vote(neighbour_labels: Sequence[str]) -> tuple[str, float, dict[str, int]]:
    """(label, confidence, votes) of the published majority vote over labels ordered nearest first."""
    labels = list(neighbour_labels)
    if not labels:
        raise CervixFMError("No neighbours to vote.")
    winner = majority_vote(labels)
    votes = dict(Counter(labels).most_common())
    return winner, votes[winner] / len(labels), votes


def suggest_labels(result: SearchResult) -> list[LabelSuggestion]:
    """One suggestion per query of a search against an atlas (k = the search's k)."""
    labels = result.labels()
    out = []
    for q in range(len(result)):
        if any(not label for label in labels[q]):
            raise InputError(f"{result.index.folder} has unlabelled entries; label suggestions need an atlas.")
        winner, confidence, votes = vote(labels[q].tolist())
        out.append(LabelSuggestion(winner, confidence, votes, result.records(q)))
    return out


def query_atlas(atlas: CellIndex, features: np.ndarray, k: int = 10, backbone: dict[str, Any] | None = None
                ) -> list[LabelSuggestion]:
    """Labelled neighbours and a suggested label for each query embedding."""
    check_labelled(atlas)
    return suggest_labels(atlas.search(features, k, backbone=backbone))
