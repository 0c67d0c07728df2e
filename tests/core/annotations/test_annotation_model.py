"""Annotation objects, classifications and review decisions."""

from __future__ import annotations

import uuid

import pytest
from shapely.geometry import Point, box

from core.annotations import (Annotation, Classification, Review, classification, default_registry, review_decision,
                              reviewed)
from core.annotations.classes import as_rgb, hashed_color
from core.annotations.model import new_id
from core.synthetic.classes import CLASSES


def test_registry_has_fixed_colours_for_known_classes_and_stable_ones_for_others():
    a, b = default_registry(), default_registry()
    for c in CLASSES:  # the synthetic ground truth and the registry agree, so both draw a class the same way
        assert a.get(c.name).color == tuple(c.color)
    for name in ("NILM", "ASC-US", "ASC-H", "LSIL", "HSIL", "SCC", "AGC", "AIS", "Trichomonas", "Candida",
                 "Region*", "Ignore*"):
        assert name in a
    assert len({a.get(n).color for n in ("NILM", "ASC-US", "ASC-H", "LSIL", "HSIL", "SCC", "AGC")}) == 7
    # an unknown class gets the same colour in every registry (every session), from its name alone
    assert a.get("Koilocyte?").color == b.get("Koilocyte?").color == hashed_color("Koilocyte?")
    assert hashed_color("Tumor") != hashed_color("Stroma")
    # a colour read from a file does not recolour a known class; set_color does
    assert a.get("HSIL", (1, 2, 3)).color == (215, 30, 30)
    assert a.set_color("HSIL", (1, 2, 3)).color == (1, 2, 3) and b.get("HSIL").color == (215, 30, 30)
    assert a.get("Brand new", (9, 8, 7)).color == (9, 8, 7)


def test_colours_from_sequences_and_java_packed_ints():
    assert as_rgb([10, 20, 30]) == (10, 20, 30)
    assert as_rgb(-16777216 | (200 << 16) | (100 << 8) | 50) == (200, 100, 50)  # QuPath's signed ARGB int
    with pytest.raises(ValueError):
        as_rgb([300, 0, 0])
    with pytest.raises(ValueError):
        Classification("", (0, 0, 0))


def test_annotation_fields_validation_and_immutability():
    a = Annotation(box(0, 0, 10, 20), "cell", "HSIL", nucleus=Point(5, 5).buffer(2), score=0.9,
                   measurements={"Area": 200}, source="model:cervixfm-tiny")
    assert uuid.UUID(a.id).version == 4 and a.class_name == "HSIL" and a.display_color == (215, 30, 30)
    assert a.measurements["Area"] == 200.0 and isinstance(a.measurements["Area"], float)
    with pytest.raises(TypeError):
        a.measurements["Area"] = 1  # read-only: edits go through replace() so the store sees them
    with pytest.raises(AttributeError):
        a.score = 0.1
    b = a.replace(classification="LSIL", measurements={"Area": 1})
    assert b.id == a.id and b.class_name == "LSIL" and a.class_name == "HSIL" and b.measurements["Area"] == 1
    assert a == a.replace() and a != b
    assert a.same_shape(b) and not a.same_shape(a.replace(geometry=box(0, 0, 10, 21)))
    assert Annotation(Point(1, 1), color=[1, 2, 3]).display_color == (1, 2, 3)
    assert Annotation(Point(1, 1)).display_color == (255, 0, 0)  # unclassified
    for bad in ({"object_type": "roi"}, {"source": "somebody"}):
        with pytest.raises(ValueError):
            Annotation(Point(0, 0), **bad)
    with pytest.raises(TypeError):
        Annotation([(0, 0), (1, 1)])
    assert len({new_id() for _ in range(1000)}) == 1000


def test_review_on_the_object_and_as_a_separate_decision():
    cell = Annotation(box(0, 0, 10, 10), "cell", "ASC-US", score=0.7, source="model:m")
    r = reviewed(cell, "reclassified", "HSIL", reviewer="dr x")
    assert r.class_name == "HSIL" and r.review.status == "reclassified" and r.review.previous == "ASC-US"
    assert r.review.reviewer == "dr x" and r.id == cell.id
    assert reviewed(cell, "accepted").class_name == "ASC-US"
    with pytest.raises(ValueError):
        reviewed(cell, "reclassified")
    with pytest.raises(ValueError):
        Review("maybe")
    d = review_decision(cell, "rejected")
    assert d.id != cell.id and d.source == "review" and d.review.target == cell.id
    assert d.review.status == "rejected" and d.class_name == "ASC-US" and d.geometry.equals(cell.geometry)
    assert cell.review is None  # the model's object is untouched
    assert classification(None) is None and classification("HSIL") is classification("HSIL")
