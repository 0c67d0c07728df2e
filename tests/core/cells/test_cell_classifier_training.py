"""Training a cell-classifier head on detected cells labelled by ground truth (training.cell_classifier)."""

from __future__ import annotations

import numpy as np
import pytest

from core.cells import classifier_from_head_file, load_cells
from core.cells.evaluate import match_cells, read_truth
from core.metrics import balanced_accuracy, binary_auroc
from core.synthetic.classes import CLASS_NAMES
from training.cell_classifier import labelled_cells, save_cell_classifier, train_cell_classifier
from training.probe_training import ProbeOptions


@pytest.fixture(scope="module")
def two_slides(smear, smear2, embedded):
    files = [load_cells(embedded[t.path.stem].folder) for t in (smear, smear2)]
    return files, [read_truth(t.geojson) for t in (smear, smear2)]


def test_cells_take_the_class_of_the_true_nucleus_at_their_centre(two_slides):
    files, truths = two_slides
    cells = labelled_cells(files[:1], truths[:1], classes=CLASS_NAMES)
    table, truth = files[0].table, truths[0]
    assert len(cells) >= 0.8 * len(table) and cells.features.shape[1] == table.embeddings.shape[1]
    d, t, _ = match_cells(list(table.polygons()), truth.polygons)
    solo = ~truth.overlapping[t]
    by_centre = {tuple(np.round(c, 3)): CLASS_NAMES[k] for c, k in zip(cells.centres, cells.labels)}
    agree = [by_centre.get(tuple(np.round(table.centres[i], 3))) == truth.names[j] for i, j in zip(d[solo], t[solo])]
    assert np.mean(agree) >= 0.98


def test_the_linear_probe_learns_cell_classes_that_transfer_to_another_slide(two_slides, tmp_path):
    files, truths = two_slides
    # The detector's measurements as features: informative, so the recipe and the labelling can be checked
    # (the test backbone's random embeddings are not; benchmarks/cells_eval.py reports real backbones).
    train = labelled_cells(files[:1], truths[:1], classes=CLASS_NAMES, features="measurements")
    test = labelled_cells(files[1:], truths[1:], classes=CLASS_NAMES, features="measurements")
    head, fit = train_cell_classifier(train, ProbeOptions(patience=20))  # standardised, folded into the head
    path = save_cell_classifier(tmp_path / "cells.safetensors", head, train.classes, train.colors)
    clf = classifier_from_head_file(path)
    assert clf.classes == list(CLASS_NAMES) and clf.abnormal_classes == ["LSIL", "HSIL"]
    out = clf.outputs(test.features)
    bacc = balanced_accuracy(test.labels, out["probs"].argmax(axis=1))
    auroc = binary_auroc(np.isin(test.labels, [3, 4]).astype(int), out["abnormality"])
    assert bacc > 0.45 and auroc > 0.9, (bacc, auroc)  # chance: 1/6 and 0.5


def test_standardisation_folds_into_the_head():
    import torch

    from core.models.heads import LinearHead
    from training.cell_classifier import fold_standardisation

    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 0.01, size=(50, 4)).astype(np.float32)
    mean, std = x.mean(0), x.std(0) + 1e-6
    head = LinearHead(4, 3)
    torch.nn.init.normal_(head.classifier.weight)
    torch.nn.init.normal_(head.classifier.bias)
    want = head(torch.as_tensor((x - mean) / std)).detach().numpy()
    fold_standardisation(head, mean, std)
    np.testing.assert_allclose(head(torch.as_tensor(x)).detach().numpy(), want, rtol=1e-3, atol=1e-3)
