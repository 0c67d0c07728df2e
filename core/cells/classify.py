"""Cell classes from the cell embedding: a linear head (role ``cell-classifier`` in a bundle) and what follows.

Each cell gets class probabilities and an abnormality score, ``1 - P(normal classes)``: the chance that the cell is
anything but normal, whatever the abnormal classes are called (Bethesda categories, CDetector's eleven, a lab's own).
Which classes count as normal is read from the head file's ``info["normal_classes"]`` when its trainer wrote it,
else from ``DEFAULT_NORMAL_CLASSES`` (Bethesda's NILM and the normal cell types of a Pap smear), else from the caller.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError

#: Class names (case-insensitive) that count as normal when a head does not say.
DEFAULT_NORMAL_CLASSES = (
    "NILM", "normal", "negative", "benign", "Superficial squamous", "Intermediate squamous", "Parabasal",
    "Inflammatory", "superficial", "intermediate", "squamous", "metaplastic", "endocervical", "endometrial",
    "lymphocyte", "neutrophil", "histiocyte", "background",
)


@dataclasses.dataclass
class CellClassifier:
    name: str
    module: torch.nn.Module  # features (N, D) -> logits (N, C)
    classes: list[str]
    colors: list[list[int]] | None
    normal: np.ndarray  # (C,) bool

    def __post_init__(self) -> None:
        if not self.normal.any():
            raise ConfigError(
                f"Cell classifier {self.name!r}: none of its classes ({', '.join(self.classes)}) is a normal class, "
                "so an abnormality score is undefined. Name the normal classes (normal_classes=... / "
                "--normal-classes, or info['normal_classes'] in the head file).")
        if self.normal.all():
            raise ConfigError(f"Cell classifier {self.name!r}: every class ({', '.join(self.classes)}) counts as "
                              "normal; name the normal classes explicitly.")

    @property
    def abnormal_classes(self) -> list[str]:
        return [c for c, n in zip(self.classes, self.normal) if not n]

    @torch.inference_mode()
    def predict(self, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """(N, C) float32 class probabilities."""
        param = next(self.module.parameters())
        out = []
        for start in range(0, len(features), batch_size):
            x = torch.as_tensor(np.asarray(features[start:start + batch_size], np.float32), device=param.device)
            out.append(torch.softmax(self.module(x.to(param.dtype)).float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def abnormality(self, probs: np.ndarray) -> np.ndarray:
        """(N,) float32 ``1 - P(normal)``, clipped to [0, 1] against rounding."""
        return np.clip(1.0 - probs[:, self.normal].sum(axis=1), 0.0, 1.0).astype(np.float32)

    def outputs(self, features: np.ndarray) -> dict[str, np.ndarray]:
        probs = self.predict(features)
        return {"probs": probs.astype(np.float32), "abnormality": self.abnormality(probs)}

    def describe(self) -> dict[str, Any]:
        return {"classes": self.classes, "colors": self.colors,
                "normal_classes": [c for c, n in zip(self.classes, self.normal) if n]}


def normal_mask(classes: Sequence[str], normal_classes: Sequence[str] | None = None) -> np.ndarray:
    names = {n.strip().lower() for n in (normal_classes if normal_classes is not None else DEFAULT_NORMAL_CLASSES)}
    unknown = [n for n in (normal_classes or ()) if n.strip().lower() not in {c.lower() for c in classes}]
    if normal_classes is not None and unknown:
        raise ConfigError(f"Normal classes {unknown} are not classes of the head ({', '.join(classes)}).")
    return np.array([c.strip().lower() in names for c in classes], bool)


def classifier_from_head_file(path: str | os.PathLike, name: str | None = None,
                              normal_classes: Sequence[str] | None = None, device: str = "cpu") -> CellClassifier:
    """A cell classifier from a ``linear`` head file (``core.models.heads.save_head``)."""
    from ..models.heads.head_file import load_head

    head = load_head(path, device=device)
    if head.kind != "linear":
        raise ConfigError(f"{path} holds a {head.kind!r} head; a cell classifier is a 'linear' head.")
    normal = normal_classes if normal_classes is not None else head.info.get("normal_classes")
    return CellClassifier(name or os.path.splitext(os.path.basename(str(path)))[0], head.module.eval(),
                          list(head.classes), head.colors, normal_mask(head.classes, normal))


def classifiers_of_model(model, normal_classes: Sequence[str] | None = None) -> list[CellClassifier]:
    """The ``cell-classifier`` heads of an ``AnalysisModel`` loaded from a bundle."""
    out = []
    for head in model.heads_with_role("cell-classifier"):
        normal = normal_classes
        if normal is None:
            from ..models.heads.head_file import load_head

            normal = load_head(head.spec.file).info.get("normal_classes")
        out.append(CellClassifier(head.spec.name, head.module.eval(), list(head.classes), head.colors,
                                  normal_mask(head.classes, normal)))
    return out


def rank(scores: np.ndarray, top_k: int | None = None, min_score: float = 0.0) -> np.ndarray:
    """Indices of the cells with the highest scores first (ties by index, so the order is reproducible)."""
    scores = np.asarray(scores, np.float64)
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[scores[order] >= min_score]
    return order[:top_k] if top_k is not None else order


def ranked_lists(probs: np.ndarray, abnormality: np.ndarray, classifier: CellClassifier, top_k: int = 100
                 ) -> dict[str, list[int]]:
    """Cell indices ranked by abnormality, and per abnormal class by that class's probability among the cells
    predicted as that class: the galleries a reviewer reads first."""
    out: dict[str, list[int]] = {"abnormality": rank(abnormality, top_k).tolist()}
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    for c, name in enumerate(classifier.classes):
        members = np.flatnonzero(pred == c)
        out[name] = members[rank(probs[members, c], top_k)].tolist()
    return out
