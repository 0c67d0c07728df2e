"""k-nearest-neighbour evaluation of a backbone on labelled cell crops (DINO's weighted k-NN classifier).

Features are the normed CLS tokens, L2-normalised; each query takes its ``k`` most cosine-similar keys, each voting for
its label with weight ``exp(similarity / T)`` (T = 0.07), and predicts the class with the largest total. Without
training anything on top, this shows whether the feature space groups cells by class.

Splits: ``train/``+``test/`` when the data set has both; otherwise keys and queries come from disjoint *source
images*, the file-name prefix before the first ``_`` (``00012_3345.png`` comes from image ``00012``), so cells of one
smear never appear on both sides (a stratified group split, 1 fold of 5, seeded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch


def knn_predict(keys: np.ndarray, key_labels: np.ndarray, queries: np.ndarray, k: int = 20,
                temperature: float = 0.07, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels (Q,), class scores (Q, C)) by similarity-weighted voting of the k nearest keys."""
    keys = torch.nn.functional.normalize(torch.as_tensor(np.asarray(keys, np.float32)), dim=1)
    queries = torch.nn.functional.normalize(torch.as_tensor(np.asarray(queries, np.float32)), dim=1)
    labels = torch.as_tensor(np.asarray(key_labels, np.int64))
    c = int(num_classes if num_classes is not None else labels.max().item() + 1)
    k = min(int(k), keys.shape[0])
    sims, idx = (queries @ keys.t()).topk(k, dim=1)
    weights = (sims / temperature).exp()
    scores = torch.zeros(queries.shape[0], c).scatter_add_(1, labels[idx], weights)
    return scores.argmax(dim=1).numpy(), scores.numpy()


def knn_metrics(keys, key_labels, queries, query_labels, k: int = 20, temperature: float = 0.07,
                num_classes: int | None = None) -> dict[str, float]:
    from core.metrics import balanced_accuracy, top1_accuracy

    pred, _ = knn_predict(keys, key_labels, queries, k, temperature, num_classes)
    return {f"knn{k}_accuracy": top1_accuracy(query_labels, pred),
            f"knn{k}_balanced_accuracy": balanced_accuracy(query_labels, pred)}


def source_groups(names: Sequence[str]) -> np.ndarray:
    return np.array([Path(n).name.split("_", 1)[0] if "_" in Path(n).name else Path(n).name for n in names])


def source_disjoint_split(labels: np.ndarray, groups: np.ndarray, seed: int = 0, n_splits: int = 5,
                          fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(key indices, query indices): fold ``fold`` of a shuffled stratified group k-fold is the query side."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups.tolist()))
    splitter = StratifiedGroupKFold(n_splits=min(n_splits, max(2, n_groups)), shuffle=True, random_state=seed)
    for i, (keys, queries) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        if i == fold:
            return keys, queries
    raise ValueError(f"fold {fold} out of range")


def labelled_split(data_path: str | Path, seed: int = 0):
    """(keys, queries) as ``training.datasets.LabelledImages``, per the module docstring."""
    from core.errors import InputError
    from training.datasets import load_dataset

    splits = load_dataset(data_path, None, seed=seed, need=("train",))
    if len(splits.test):
        return splits.train, splits.test
    images = splits.train
    groups = source_groups(images.names)
    if len(set(groups.tolist())) < 2:
        raise InputError(f"k-NN evaluation needs a test split or images from at least two sources in {data_path}.")
    key_idx, query_idx = source_disjoint_split(images.labels, groups, seed)
    return images.subset(key_idx), images.subset(query_idx)


def embed_paths(model: torch.nn.Module, paths: Sequence[Path], size: int, device: torch.device,
                batch_size: int = 64) -> np.ndarray:
    from core.images import read_rgb
    from core.models.inference import embed_images
    from core.models.preprocessing import Preprocessing

    was_training = model.training
    model.eval()
    try:
        return embed_images(model, (read_rgb(p) for p in paths), Preprocessing(size=size), batch_size=batch_size,
                            device=device)
    finally:
        model.train(was_training)


def evaluate_backbone(model: torch.nn.Module, data_path: str | Path, size: int, device: torch.device,
                      k: int = 20, temperature: float = 0.07, seed: int = 0) -> dict[str, Any]:
    keys, queries = labelled_split(data_path, seed)
    key_x = embed_paths(model, keys.paths, size, device)
    query_x = embed_paths(model, queries.paths, size, device)
    num_classes = int(max(keys.labels.max(), queries.labels.max()) + 1)
    out: dict[str, Any] = knn_metrics(key_x, keys.labels, query_x, queries.labels, k, temperature, num_classes)
    out.update(n_keys=len(keys), n_queries=len(queries))
    return out
