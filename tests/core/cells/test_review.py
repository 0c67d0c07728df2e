"""Review order and review decisions of a slide's cells: rankings, the model cell a decision targets, the ledger."""

from __future__ import annotations

import dataclasses

import numpy as np
from shapely.geometry import Point, box

from core.annotations import AnnotationStore, review_decision
from core.cells import Cell, CellTable
from core.cells.export import cell_ids
from core.cells.review import (ABNORMALITY, DETECTION, ReviewLedger, cell_annotation, predicted_labels,
                               review_rankings)

CLASSES = ["NILM", "LSIL", "HSIL"]


def table_with(probs) -> CellTable:
    probs = np.asarray(probs, np.float32)
    cells = [Cell(box(100 * i, 0, 100 * i + 40, 40), Point(100 * i + 20, 20).buffer(6), (100 * i + 20.0, 20.0),
                  {"Cell: Area µm^2": 10.0 + i}, score=0.5 + 0.1 * i) for i in range(len(probs))]
    table = CellTable.from_cells(cells, 0, np.array([[100 * i - 92, -92, 224, 224] for i in range(len(probs))]))
    table.heads["cells"] = {"probs": probs, "abnormality": 1 - probs[:, 0]}
    return table


PROBS = [[0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1], [0.05, 0.15, 0.8], [0.6, 0.3, 0.1]]


def test_rankings_put_abnormality_first_then_abnormal_classes_best_first():
    table = table_with(PROBS)
    lists = review_rankings(table, "cells", CLASSES, ["NILM"])
    assert [r.name for r in lists] == [ABNORMALITY, "LSIL", "HSIL", "NILM"]
    assert lists[0].indices.tolist() == [3, 1, 2, 4, 0]
    np.testing.assert_allclose(lists[0].scores, [0.95, 0.9, 0.8, 0.4, 0.1], atol=1e-6)
    by_name = {r.name: r for r in lists}
    assert by_name["HSIL"].indices.tolist() == [3, 1] and by_name["HSIL"].abnormal
    np.testing.assert_allclose(by_name["HSIL"].scores, [0.8, 0.7])
    assert by_name["NILM"].indices.tolist() == [0, 4] and not by_name["NILM"].abnormal
    assert by_name["LSIL"].title == "LSIL (1)"
    assert predicted_labels(table, "cells", CLASSES) == ["NILM", "HSIL", "LSIL", "HSIL", "NILM"]


def test_without_a_classifier_cells_are_listed_by_detection_score():
    table = table_with(PROBS)
    table.heads.clear()
    (only,) = review_rankings(table)
    assert only.name == DETECTION and only.indices.tolist() == [4, 3, 2, 1, 0]
    # unknown normal classes in a record fall back to the default normal classes
    lists = review_rankings(table_with(PROBS), "cells", CLASSES, ["Nope"])
    assert [r.name for r in lists][1:] == ["LSIL", "HSIL", "NILM"]


def test_decisions_follow_the_store_through_edits_undo_and_load():
    table = table_with(PROBS)
    ids = cell_ids(table, "slide")
    cells = [cell_annotation(table, i, ids[i], "HSIL", 0.9) for i in range(len(table))]
    assert cells[1].id == ids[1] and cells[1].object_type == "cell" and cells[1].nucleus is not None
    assert cells[1].geometry.bounds == (100.0, 0.0, 140.0, 40.0)
    store = AnnotationStore()
    ledger = ReviewLedger()
    store.subscribe(ledger.apply)
    store.add(review_decision(cells[1], "accepted"), label="Accept cell")
    assert ledger.decision(ids[1]).review.status == "accepted" and len(ledger) == 1
    with store.transaction("Reclassify cell"):
        store.remove(ledger.decisions_about(ids[1]))
        store.add(review_decision(cells[1], "reclassified", "LSIL"))
    now = ledger.decision(ids[1])
    assert now.review.status == "reclassified" and now.class_name == "LSIL" and now.review.previous == "HSIL"
    store.undo()
    assert ledger.decision(ids[1]).review.status == "accepted"
    store.undo()
    assert ledger.decision(ids[1]) is None and len(ledger) == 0
    store.add(review_decision(cells[2], "rejected"))
    store.load(store.snapshot() + [review_decision(cells[0], "accepted")])
    assert ledger.targets() == {ids[0], ids[2]}
    rebuilt = ReviewLedger(store.snapshot())
    assert rebuilt.targets() == ledger.targets()


def test_the_latest_of_several_decisions_counts():
    table = table_with(PROBS)
    target = cell_annotation(table, 0, "cell-0")
    first = review_decision(target, "accepted")
    later = review_decision(target, "rejected")
    later = later.replace(review=dataclasses.replace(later.review, time=first.review.time + 5))
    assert ReviewLedger([later, first]).decision("cell-0").review.status == "rejected"
    assert ReviewLedger([first, later]).decision("cell-0").review.status == "rejected"
