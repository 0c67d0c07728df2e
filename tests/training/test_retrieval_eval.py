"""Retrieval evaluation: the published centring/normalisation/exact search, metrics, and the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cervixfm_app.cli import main as cervixfm
from training.retrieval_eval import evaluate_retrieval, prepare_embeddings


def test_search_is_exact_cosine_ranking_after_centring():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(200, 16)).astype(np.float32) + 3.0  # an offset that centring must remove
    queries = rng.normal(size=(30, 16)).astype(np.float32) + 3.0
    labels = rng.integers(0, 3, 200)
    metrics, idx, dist = evaluate_retrieval(keys, labels, queries, rng.integers(0, 3, 30))
    centred_k = keys - keys.mean(0)
    centred_q = queries - keys.mean(0)
    cos = (centred_q / np.linalg.norm(centred_q, axis=1, keepdims=True)) @ (
        centred_k / np.linalg.norm(centred_k, axis=1, keepdims=True)).T
    want = np.argsort(-cos, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, want)
    assert np.all(np.diff(dist, axis=1) >= -1e-6)
    k, q = prepare_embeddings(keys, queries)
    np.testing.assert_allclose(np.linalg.norm(k, axis=1), 1, rtol=1e-5)
    assert set(metrics) == {"top1", "top3", "top5", "top10", "mv5", "mv10"}


def test_hand_made_neighbours_give_known_scores():
    # 1-d features: keys at 1..10 with labels; after centring (mean 5.5) and normalising, the sign decides
    keys = np.arange(1, 11, dtype=np.float32)[:, None]
    key_labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    queries = np.array([[9.0], [2.0]], np.float32)  # positive side -> all label-1 keys tie at distance 0
    metrics, idx, _ = evaluate_retrieval(keys, key_labels, queries, np.array([1, 1]), k=5)
    assert set(key_labels[idx[0]]) == {1} and set(key_labels[idx[1]]) == {0}
    assert metrics == {"top1": 0.5, "top3": 0.5, "top5": 0.5, "mv5": 0.5}


def test_retrieval_cli_on_cell_crops(train_test_dataset, tiny_backbone, tmp_path):
    out = tmp_path / "ret"
    assert cervixfm(["retrieval-eval", "--data_path", str(train_test_dataset), "--save_path", str(out),
                     "--pretrained_path", str(tiny_backbone), "--device", "cpu", "--seed", "42"]) == 0
    result = json.loads((out / "retrieval.json").read_text())
    assert result["n_keys"] == 26 and result["n_queries"] == 12 and result["k"] == 10
    assert result["top1"] >= 0.9 and result["top10"] >= result["top5"] >= result["top3"] >= result["top1"]
    with open(out / "neighbours.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and rows[0]["neighbour_10"]
    # a second run reuses the caches written by the first
    again = tmp_path / "again"
    assert cervixfm(["retrieval-eval", "--data_path", str(train_test_dataset), "--save_path", str(again),
                     "--pretrained_path", str(tiny_backbone), "--device", "cpu",
                     "--key_feature_path", str(out / "features" / "train.features.npz"),
                     "--query_feature_path", str(out / "features" / "test.features.npz")]) == 0
    assert json.loads((again / "retrieval.json").read_text())["top1"] == pytest.approx(result["top1"])
    assert not (again / "features").exists()
