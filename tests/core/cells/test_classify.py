"""Cell classifier heads, abnormality scores, rankings and the transparent slide summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.cells.classify import (CellClassifier, classifier_from_head_file, normal_mask, rank, ranked_lists)
from core.cells.summary import cell_slide_summary
from core.errors import ConfigError
from core.models.heads import LinearHead, save_head

CLASSES = ["NILM", "LSIL", "HSIL"]


def head_with(weights: np.ndarray, bias: np.ndarray) -> LinearHead:
    head = LinearHead(weights.shape[1], weights.shape[0])
    with torch.no_grad():
        head.classifier.weight.copy_(torch.as_tensor(weights, dtype=torch.float32))
        head.classifier.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return head


@pytest.fixture()
def classifier():
    # feature k votes for class k: features (a, b, c) give softmax(a, b, c)
    return CellClassifier("cells", head_with(np.eye(3), np.zeros(3)), CLASSES, None, normal_mask(CLASSES))


def test_probabilities_and_abnormality_are_one_minus_p_normal(classifier):
    feats = np.array([[5.0, 0.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    out = classifier.outputs(feats)
    expected = np.exp(feats) / np.exp(feats).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["probs"], expected, rtol=1e-5)
    np.testing.assert_allclose(out["abnormality"], 1 - expected[:, 0], rtol=1e-5)
    assert out["abnormality"][0] < 0.02 and out["abnormality"][1] > 0.9


def test_normal_classes_default_to_bethesda_and_normal_cell_types():
    names = ["Superficial squamous", "Intermediate squamous", "Parabasal", "LSIL", "HSIL", "Inflammatory"]
    assert normal_mask(names).tolist() == [True, True, True, False, False, True]
    assert normal_mask(["nilm", "ASC-US"]).tolist() == [True, False]
    assert normal_mask(["a", "b", "c"], ["b"]).tolist() == [False, True, False]
    with pytest.raises(ConfigError, match="not classes of the head"):
        normal_mask(["a", "b"], ["x"])


def test_a_head_without_a_normal_class_is_refused_with_advice():
    with pytest.raises(ConfigError, match="Name the normal classes"):
        CellClassifier("cdet", head_with(np.eye(2), np.zeros(2)), ["ASC-US", "HSIL"], None,
                       normal_mask(["ASC-US", "HSIL"]))


def test_head_file_round_trip_keeps_classes_colours_and_normal_classes(tmp_path):
    head = head_with(np.eye(3), np.array([0.0, 0.5, -0.5]))
    path = save_head(tmp_path / "h.safetensors", "linear", head, head.config(), ["neg", "low", "high"],
                     [[0, 200, 0], [250, 160, 20], [220, 30, 30]], {"normal_classes": ["neg"]})
    clf = classifier_from_head_file(path)
    assert clf.name == "h" and clf.classes == ["neg", "low", "high"] and clf.normal.tolist() == [True, False, False]
    feats = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_allclose(clf.predict(feats), torch.softmax(head(torch.as_tensor(feats)), -1).detach().numpy(),
                               rtol=1e-5)


def test_rankings_put_the_most_abnormal_first_and_per_class_lists_hold_that_class(classifier):
    rng = np.random.default_rng(3)
    feats = rng.normal(scale=2.0, size=(200, 3)).astype(np.float32)
    out = classifier.outputs(feats)
    lists = ranked_lists(out["probs"], out["abnormality"], classifier, top_k=20)
    ab = out["abnormality"][lists["abnormality"]]
    assert len(ab) == 20 and (np.diff(ab) <= 0).all() and ab[0] == out["abnormality"].max()
    for c, name in enumerate(CLASSES):
        idx = lists[name]
        assert (out["probs"][idx].argmax(axis=1) == c).all() and (np.diff(out["probs"][idx, c]) <= 0).all()
    assert rank(np.array([0.2, 0.9, 0.9, 0.1])).tolist() == [1, 2, 0, 3]  # ties keep index order


def test_slide_summary_counts_what_a_reviewer_can_check(classifier):
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25]])
    abnormality = 1 - probs[:, 0]
    s = cell_slide_summary(probs, abnormality, classifier, threshold=0.5, top_k=2,
                           slide_scores={"abmil": {"label": "HSIL", "classes": CLASSES, "probs": [0.1, 0.2, 0.7]}})
    assert s["cells_per_class"] == {"NILM": 2, "LSIL": 1, "HSIL": 2}
    assert s["cells_per_class_above_threshold"] == {"NILM": 1, "LSIL": 1, "HSIL": 2}
    assert s["abnormal_cells_above_threshold"] == 4
    assert s["top2_mean_abnormality"] == pytest.approx(0.9)
    assert s["leading_abnormal_class"] == "HSIL"
    assert s["slide_heads"]["abmil"]["label"] == "HSIL"
    none = cell_slide_summary(probs[:1], abnormality[:1], classifier)
    assert none["leading_abnormal_class"] == "none" and none["abnormal_cells_above_threshold"] == 0
