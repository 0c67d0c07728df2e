"""Classification and retrieval metrics as plain functions over numpy arrays.

The definitions follow the published CervixFM evaluation so that numbers are comparable with the paper:

- predictions are the arg-max of the class probabilities;
- balanced accuracy is the mean recall over the classes present in ``y_true``;
- F1 macro/weighted average over the classes that occur in ``y_true`` or in the predictions (a class nobody
  predicted and nobody has does not drag the mean down), micro F1 pools every decision (equal to top-1 accuracy);
- AUROC is one-vs-rest on the probability of each class; micro pools every (sample, class) decision.
  Binary problems report the positive-class AUROC under all three names, as the published code does
  (the two one-vs-rest curves of a binary problem are mirror images, so macro and weighted equal it anyway).

Classes absent from ``y_true`` (a rare class missing from a small test split) have no defined one-vs-rest AUROC.
scikit-learn then returns NaN for the macro mean; here such classes are left out of the macro mean, have weight 0 in
the weighted mean, and still take part in micro AUROC (their column holds only negatives). The classes that were
left out are reported under ``auroc_undefined_classes`` so a reader knows the mean covers fewer classes.

Everything is computed here with numpy (AUROC by the rank-sum statistic with average ranks for ties, which equals
the area under the step ROC curve); the tests check every number against scikit-learn.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "as_probabilities", "confusion_matrix", "balanced_accuracy", "top1_accuracy", "f1_scores", "binary_auroc",
    "auroc_ovr", "roc_curves", "classification_metrics", "topk_hit_rate", "majority_vote_accuracy",
    "retrieval_metrics", "RETRIEVAL_KS",
]


def as_probabilities(probs: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """(N, C) float64 probabilities; a (N,) vector is read as the positive-class probability of a binary problem."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
        p = p.reshape(-1)
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be (N,) or (N, C), got shape {p.shape}")
    if num_classes is not None and p.shape[1] != num_classes:
        raise ValueError(f"probabilities have {p.shape[1]} columns for {num_classes} classes")
    return p


def _labels(y_true: Any, n: int | None = None) -> np.ndarray:
    y = np.asarray(y_true).reshape(-1)
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        elif y.dtype.kind != "b":
            raise ValueError("labels must be integer class indices")
    y = y.astype(np.int64)
    if n is not None and len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} predictions")
    if len(y) and y.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    return y


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class, every class index 0..C-1 kept in place."""
    y = _labels(y_true)
    p = _labels(y_pred, len(y))
    c = num_classes if num_classes is not None else int(max(y.max(initial=-1), p.max(initial=-1)) + 1)
    if len(y) and max(y.max(), p.max()) >= c:
        raise ValueError(f"class index out of range for {c} classes")
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def top1_accuracy(y_true, y_pred) -> float:
    y = _labels(y_true)
    p = _labels(y_pred, len(y))
    return float(np.mean(y == p)) if len(y) else float("nan")


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean per-class recall over the classes that occur in ``y_true``."""
    y = _labels(y_true)
    p = _labels(y_pred, len(y))
    recalls = [np.mean(p[y == c] == c) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")


def f1_scores(y_true, y_pred) -> dict[str, float]:
    """``f1_macro``, ``f1_micro``, ``f1_weighted`` over the labels in ``y_true`` or ``y_pred``."""
    y = _labels(y_true)
    p = _labels(y_pred, len(y))
    classes = np.union1d(y, p)
    f1 = np.zeros(len(classes))
    support = np.zeros(len(classes))
    tp_sum = fp_sum = fn_sum = 0
    for i, c in enumerate(classes):
        tp = int(np.sum((p == c) & (y == c)))
        fp = int(np.sum((p == c) & (y != c)))
        fn = int(np.sum((p != c) & (y == c)))
        tp_sum, fp_sum, fn_sum = tp_sum + tp, fp_sum + fp, fn_sum + fn
        f1[i] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
        support[i] = tp + fn
    micro = 2 * tp_sum / (2 * tp_sum + fp_sum + fn_sum) if (2 * tp_sum + fp_sum + fn_sum) else 0.0
    weighted = float(np.sum(f1 * support) / support.sum()) if support.sum() else 0.0
    return {"f1_macro": float(f1.mean()) if len(f1) else float("nan"), "f1_micro": float(micro),
            "f1_weighted": weighted}


def binary_auroc(is_positive, scores) -> float:
    """Area under the ROC curve of ``scores`` for a 0/1 target; NaN when one side is empty.

    Rank-sum (Mann-Whitney) form with average ranks, so tied scores count one half, as the trapezoidal area does.
    """
    t = np.asarray(is_positive).astype(bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = int(t.sum())
    n_neg = len(t) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_ovr(y_true, probs, num_classes: int | None = None) -> dict[str, Any]:
    """One-vs-rest AUROC: ``auroc_macro``, ``auroc_micro``, ``auroc_weighted``, ``auroc_per_class``, and
    ``auroc_undefined_classes`` (class indices absent from ``y_true``, left out of the macro mean)."""
    p = as_probabilities(probs, num_classes)
    y = _labels(y_true, len(p))
    c = p.shape[1]
    if len(y) and y.max() >= c:
        raise ValueError(f"label {y.max()} out of range for {c} probability columns")
    onehot = np.zeros((len(y), c), dtype=bool)
    onehot[np.arange(len(y)), y] = True
    if c == 2:
        auc = binary_auroc(y == 1, p[:, 1])
        per_class = [auc, auc] if (onehot[:, 0].any() and onehot[:, 1].any()) else [float("nan")] * 2
        return {"auroc_macro": auc, "auroc_micro": auc, "auroc_weighted": auc, "auroc_per_class": per_class,
                "auroc_undefined_classes": [k for k in range(2) if not onehot[:, k].any()]}
    per_class = [binary_auroc(onehot[:, k], p[:, k]) for k in range(c)]
    support = onehot.sum(axis=0)
    defined = [k for k in range(c) if 0 < support[k] < len(y)]
    macro = float(np.mean([per_class[k] for k in defined])) if defined else float("nan")
    weighted = (float(sum(per_class[k] * support[k] for k in defined) / sum(support[k] for k in defined))
                if defined else float("nan"))
    micro = binary_auroc(onehot.ravel(), p.ravel())
    return {"auroc_macro": macro, "auroc_micro": micro, "auroc_weighted": weighted, "auroc_per_class": per_class,
            "auroc_undefined_classes": [k for k in range(c) if k not in defined]}


def roc_curves(y_true, probs, num_classes: int | None = None) -> dict[str, dict[str, np.ndarray | float]]:
    """ROC curves for plotting: ``class_<k>`` per class with positives, ``micro`` and ``macro`` (the mean of the
    per-class curves interpolated on their pooled FPR grid), each ``{"fpr", "tpr", "auc"}``; binary: ``positive``."""
    from sklearn.metrics import roc_curve

    p = as_probabilities(probs, num_classes)
    y = _labels(y_true, len(p))
    c = p.shape[1]
    curves: dict[str, dict[str, np.ndarray | float]] = {}
    if c == 2:
        if 0 < (y == 1).sum() < len(y):
            fpr, tpr, _ = roc_curve(y == 1, p[:, 1])
            curves["positive"] = {"fpr": fpr, "tpr": tpr, "auc": binary_auroc(y == 1, p[:, 1])}
        return curves
    onehot = np.zeros((len(y), c), dtype=bool)
    onehot[np.arange(len(y)), y] = True
    for k in range(c):
        if 0 < onehot[:, k].sum() < len(y):
            fpr, tpr, _ = roc_curve(onehot[:, k], p[:, k])
            curves[f"class_{k}"] = {"fpr": fpr, "tpr": tpr, "auc": binary_auroc(onehot[:, k], p[:, k])}
    if curves:
        grid = np.unique(np.concatenate([v["fpr"] for v in curves.values()]))
        mean_tpr = np.mean([np.interp(grid, v["fpr"], v["tpr"]) for v in curves.values()], axis=0)
        fpr, tpr, _ = roc_curve(onehot.ravel(), p.ravel())
        curves["micro"] = {"fpr": fpr, "tpr": tpr, "auc": binary_auroc(onehot.ravel(), p.ravel())}
        curves["macro"] = {"fpr": grid, "tpr": mean_tpr, "auc": float(_trapezoid(mean_tpr, grid))}
    return curves


def classification_metrics(y_true, probs, num_classes: int | None = None) -> dict[str, Any]:
    """Every scalar the published evaluation reports, plus the confusion matrix and per-class AUROC (as lists)."""
    p = as_probabilities(probs, num_classes)
    y = _labels(y_true, len(p))
    pred = p.argmax(axis=1)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "top1_accuracy": top1_accuracy(y, pred),
        **f1_scores(y, pred),
        **auroc_ovr(y, p),
        "confusion_matrix": confusion_matrix(y, pred, p.shape[1]).tolist(),
    }
    return out


_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz


# ------------------------------------------------------------------------------------------------------ retrieval
RETRIEVAL_KS = (1, 3, 5, 10)


def _neighbour_table(query_labels, neighbour_labels) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(query_labels).reshape(-1)
    nb = np.asarray(neighbour_labels)
    if nb.ndim != 2 or len(nb) != len(q):
        raise ValueError(f"neighbour labels must be (N, K) for N={len(q)} queries, got {nb.shape}")
    return q, nb


def topk_hit_rate(query_labels, neighbour_labels, k: int) -> float:
    """Share of queries with at least one of their first ``k`` neighbours (nearest first) of the query's label."""
    q, nb = _neighbour_table(query_labels, neighbour_labels)
    if k > nb.shape[1]:
        raise ValueError(f"top-{k} needs at least {k} neighbours per query, got {nb.shape[1]}")
    return float(np.mean(np.any(nb[:, :k] == q[:, None], axis=1))) if len(q) else float("nan")


def majority_vote(labels) -> Any:
    """The most frequent label; a tie goes to the tied label met first, i.e. the one with the nearest neighbour
    (the published code's ``Counter.most_common(1)``)."""
    return Counter(list(labels)).most_common(1)[0][0]


def majority_vote_accuracy(query_labels, neighbour_labels, k: int) -> float:
    """MV@k: share of queries whose label wins the vote among their first ``k`` neighbours."""
    q, nb = _neighbour_table(query_labels, neighbour_labels)
    if k > nb.shape[1]:
        raise ValueError(f"MV@{k} needs at least {k} neighbours per query, got {nb.shape[1]}")
    hits = [majority_vote(row[:k].tolist()) == label for row, label in zip(nb, q.tolist())]
    return float(np.mean(hits)) if hits else float("nan")


def retrieval_metrics(query_labels, neighbour_labels, ks=RETRIEVAL_KS, vote_ks=(5, 10)) -> dict[str, float]:
    """``top1``, ``top3``, ``top5``, ``top10``, ``mv5``, ``mv10`` (those the neighbour count allows)."""
    _, nb = _neighbour_table(query_labels, neighbour_labels)
    out = {f"top{k}": topk_hit_rate(query_labels, nb, k) for k in ks if k <= nb.shape[1]}
    out.update({f"mv{k}": majority_vote_accuracy(query_labels, nb, k) for k in vote_ks if k <= nb.shape[1]})
    return out
