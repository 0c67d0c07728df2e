"""core.metrics against independent scikit-learn calls on random predictions, binary and multi-class."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from core import metrics


def _random_case(seed: int, n: int, c: int, skew: float = 0.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += skew  # somewhat informative predictions, not only chance
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # coarse probabilities create ties, which the rank form must count as sklearn's trapezoids do
    probs = np.round(probs, 2)
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("seed,n,c,skew", [(0, 50, 2, 0.0), (1, 300, 2, 1.5), (2, 200, 4, 1.0), (3, 97, 11, 0.5),
                                           (4, 400, 3, 3.0)])
def test_classification_metrics_match_sklearn(seed, n, c, skew):
    y, probs = _random_case(seed, n, c, skew)
    got = metrics.classification_metrics(y, probs, c)
    pred = probs.argmax(1)
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert got["top1_accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    for avg in ("macro", "micro", "weighted"):
        assert got[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg), abs=1e-12), avg
    np.testing.assert_array_equal(got["confusion_matrix"], skm.confusion_matrix(y, pred, labels=list(range(c))))
    if c == 2:
        want = skm.roc_auc_score(y, probs[:, 1])
        for avg in ("macro", "micro", "weighted"):
            assert got[f"auroc_{avg}"] == pytest.approx(want, abs=1e-12)
    else:
        onehot = label_binarize(y, classes=np.arange(c))
        for avg in ("macro", "micro", "weighted"):
            want = skm.roc_auc_score(onehot, probs, average=avg)
            assert got[f"auroc_{avg}"] == pytest.approx(want, abs=1e-12), avg
        # the multi-class API gives the same macro/weighted numbers (probabilities sum to one)
        assert got["auroc_macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-12)
        assert got["auroc_per_class"] == pytest.approx(skm.roc_auc_score(onehot, probs, average=None), abs=1e-12)
    assert got["auroc_undefined_classes"] == []


def test_binary_positive_probability_vector_equals_two_columns():
    y, probs = _random_case(5, 120, 2, 1.0)
    a = metrics.classification_metrics(y, probs[:, 1])
    b = metrics.classification_metrics(y, probs)
    assert a == b
    assert a["auroc_macro"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]), abs=1e-12)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_class_absent_from_truth_is_left_out_of_macro_auroc():
    y, probs = _random_case(6, 150, 4, 1.0)
    y[y == 2] = 0  # class 2 never occurs in y_true
    got = metrics.classification_metrics(y, probs, 4)
    present = [0, 1, 3]
    onehot = label_binarize(y, classes=np.arange(4))
    assert got["auroc_undefined_classes"] == [2]
    assert np.isnan(got["auroc_per_class"][2])
    assert got["auroc_macro"] == pytest.approx(skm.roc_auc_score(onehot[:, present], probs[:, present]), abs=1e-12)
    assert got["auroc_weighted"] == pytest.approx(
        skm.roc_auc_score(onehot[:, present], probs[:, present], average="weighted"), abs=1e-12)
    assert got["auroc_micro"] == pytest.approx(skm.roc_auc_score(onehot, probs, average="micro"), abs=1e-12)
    pred = probs.argmax(1)
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert np.asarray(got["confusion_matrix"]).shape == (4, 4)


def test_roc_curves_match_sklearn():
    y, probs = _random_case(7, 200, 3, 1.0)
    curves = metrics.roc_curves(y, probs)
    onehot = label_binarize(y, classes=np.arange(3))
    for k in range(3):
        fpr, tpr, _ = skm.roc_curve(onehot[:, k], probs[:, k])
        np.testing.assert_allclose(curves[f"class_{k}"]["fpr"], fpr)
        np.testing.assert_allclose(curves[f"class_{k}"]["tpr"], tpr)
        assert curves[f"class_{k}"]["auc"] == pytest.approx(skm.auc(fpr, tpr), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(onehot.ravel(), probs.ravel())
    np.testing.assert_allclose(curves["micro"]["tpr"], tpr)
    assert curves["micro"]["auc"] == pytest.approx(skm.auc(fpr, tpr), abs=1e-12)
    assert 0.5 < curves["macro"]["auc"] <= 1.0
    yb, pb = _random_case(8, 60, 2, 1.0)
    fpr, tpr, _ = skm.roc_curve(yb, pb[:, 1])
    np.testing.assert_allclose(metrics.roc_curves(yb, pb)["positive"]["tpr"], tpr)


def test_retrieval_metrics_match_a_direct_count():
    rng = np.random.default_rng(9)
    q = rng.integers(0, 4, 300)
    nb = rng.integers(0, 4, (300, 10))
    nb[:40] = q[:40, None]  # some perfect queries
    got = metrics.retrieval_metrics(q, nb)
    for k in (1, 3, 5, 10):
        want = np.mean([q[i] in nb[i, :k] for i in range(300)])
        assert got[f"top{k}"] == pytest.approx(want)
    for k in (5, 10):
        want = np.mean([Counter(nb[i, :k].tolist()).most_common(1)[0][0] == q[i] for i in range(300)])
        assert got[f"mv{k}"] == pytest.approx(want)


def test_majority_vote_ties_go_to_the_nearest_neighbour():
    # 1 and 2 both appear twice in the first five; 2 is met first
    assert metrics.majority_vote([2, 1, 1, 2, 3]) == 2
    assert metrics.majority_vote_accuracy([2, 1], np.array([[2, 1, 1, 2, 3], [2, 1, 1, 2, 3]]), 5) == 0.5


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError):
        metrics.classification_metrics([0, 1, 5], np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError):
        metrics.topk_hit_rate([0, 1], np.zeros((2, 3)), 5)
