"""A slide score a reviewer can check by hand: counts of confident cells per class and the most abnormal cells.

No slide-level model is needed: every number comes straight from the cell scores (and the cells behind each number
are in the ranked lists), so "12 cells called HSIL with probability >= 0.5" can be verified by looking at those
12 cells. When the bundle also has an ABMIL slide head, its score is shown alongside, not blended in.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .classify import CellClassifier


def cell_slide_summary(probs: np.ndarray, abnormality: np.ndarray, classifier: CellClassifier,
                       threshold: float = 0.5, top_k: int = 10,
                       slide_scores: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Counts of cells per predicted class (all, and with probability >= ``threshold``), cells with abnormality
    >= ``threshold``, the mean abnormality of the ``top_k`` most abnormal cells, and the most frequent confident
    abnormal class (``"none"`` when no abnormal cell reaches the threshold)."""
    n = len(probs)
    classes = classifier.classes
    pred = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
    conf = probs[np.arange(n), pred] if n else np.zeros(0)
    counts = np.bincount(pred, minlength=len(classes))
    confident = np.bincount(pred[conf >= threshold], minlength=len(classes))
    top = np.sort(abnormality)[::-1][:top_k]
    abnormal_conf = {c: int(confident[i]) for i, c in enumerate(classes) if not classifier.normal[i]}
    leading = max(abnormal_conf, key=lambda c: (abnormal_conf[c], -classes.index(c))) if abnormal_conf else None
    summary: dict[str, Any] = {
        "cells": int(n),
        "threshold": float(threshold),
        "cells_per_class": {c: int(counts[i]) for i, c in enumerate(classes)},
        "cells_per_class_above_threshold": {c: int(confident[i]) for i, c in enumerate(classes)},
        "abnormal_cells_above_threshold": int((abnormality >= threshold).sum()),
        "abnormal_share": float((abnormality >= threshold).mean()) if n else 0.0,
        f"top{top_k}_mean_abnormality": float(top.mean()) if len(top) else 0.0,
        "max_abnormality": float(abnormality.max()) if n else 0.0,
        "leading_abnormal_class": leading if leading and abnormal_conf[leading] > 0 else "none",
        "normal_classes": [c for i, c in enumerate(classes) if classifier.normal[i]],
    }
    if slide_scores:
        summary["slide_heads"] = {name: {"label": s.get("label"), "classes": s.get("classes"),
                                         "probs": s.get("probs")} for name, s in slide_scores.items()}
    return summary
