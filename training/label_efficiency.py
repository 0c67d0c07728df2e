"""The published per-class sampling rule, reproduced exactly, for label-efficiency runs and the 80/20 split.

Why exactness matters: label-efficiency curves are compared with the paper's, so the same seed and ratio must select
the same training images. The published rule (``data_label_efficiency`` in the CervixFM downstream code), for a
table of ``[file name, label]`` rows, a ratio ``r`` and an optional integer seed ``s``:

1. seed NumPy's legacy global generator with ``int(s + 100 * r)``, computed in floating point and truncated toward
   zero; without a seed, with ``int(100 * r)``. The float matters: ``100 * 0.29`` is ``28.999999999999996``, so
   ``s = 0, r = 0.29`` seeds 28, while ``42 + 100 * 0.29`` rounds to ``71.0`` and seeds 71 (not 42 + 28 = 70);
2. permute all rows with ``np.random.permutation(len(rows))`` (without a seed, only when ``r < 1``);
3. for each label in ``np.unique`` order of the label *strings* (so ``"10"`` sorts before ``"2"``), keep the first
   ``int(n_c * r)`` permuted rows of that label, ``n_c`` being the number of rows with that label, truncated too
   (a class with fewer than ``1 / r`` rows contributes none);
4. concatenate class by class.

The train/test split of the single-folder layout is the same rule with ``r = 0.8`` and "split" seeding: the seed
itself (no ``100 * r``), and without a seed no permutation at all (the first 80 % of each class in file order). The
test split is every row not in the training split. The training runs only sample when ``r < 1``.

``np.random.RandomState(seed)`` reproduces ``np.random.seed(seed); np.random.permutation(n)`` bit for bit without
touching the global generator.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from core.errors import CervixFMError

SPLIT_TRAIN_RATIO = 0.8


def published_seed(ratio: float, seed: int | None) -> int:
    """The integer the published code seeds NumPy with for this ratio and seed."""
    return int(100 * ratio) if seed is None else int(seed + 100 * ratio)


def check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise CervixFMError(f"--label_efficiency must be in (0, 1] (a share of the training rows), not {ratio}.")
    return ratio


def published_subset(labels: Sequence[str], ratio: float, seed: int | None, *, is_split: bool = False) -> np.ndarray:
    """Row indices the published rule keeps, in the order it returns them (class by class, permuted within)."""
    labels = np.asarray([str(v) for v in labels])
    n = len(labels)
    if seed is None:
        permute = ratio < 1 and not is_split
        order = np.random.RandomState(published_seed(ratio, None)).permutation(n) if permute else np.arange(n)
    else:
        order = np.random.RandomState(int(seed) if is_split else published_seed(ratio, seed)).permutation(n)
    permuted = labels[order]
    keep: list[np.ndarray] = []
    for label in np.unique(permuted):
        rows = order[permuted == label]
        keep.append(rows[: int(len(rows) * ratio)])
    return np.concatenate(keep).astype(np.int64) if keep else np.zeros(0, np.int64)


def label_efficiency_indices(labels: Sequence[str], ratio: float, seed: int | None) -> np.ndarray:
    """Training rows for a label-efficiency run; every row, in file order, when ``ratio`` is 1 (no sampling)."""
    ratio = check_ratio(ratio)
    if ratio >= 1.0:
        return np.arange(len(labels), dtype=np.int64)
    return published_subset(labels, ratio, seed)


def split_train_test(labels: Sequence[str], seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The published stratified 80/20 split: (train indices in published order, test indices in file order).

    The published code forms the test set as a Python set difference of rows, whose order is arbitrary; file order
    is used here. Identical duplicate rows cannot occur (the label table is checked for repeated file names).
    """
    train = published_subset(labels, SPLIT_TRAIN_RATIO, seed, is_split=True)
    mask = np.ones(len(labels), dtype=bool)
    mask[train] = False
    return train, np.flatnonzero(mask).astype(np.int64)
