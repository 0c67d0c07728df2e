"""QuPath GeoJSON: ground-truth round trip, bounds offset, QuPath dialect variants, repairs and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box, shape

from core.annotations import Annotation, Review, read_geojson, write_geojson
from core.annotations.geojson import parse_geojson
from core.errors import InputError
from core.slides import open_slide


def _features(path):
    return json.loads(path.read_text(encoding="utf-8"))["features"]


def test_ground_truth_imports_and_reexports_to_the_same_geometry(gt_slide, tmp_path):
    report = read_geojson(gt_slide.geojson, source="ground-truth")
    assert not report.warnings and len(report.annotations) == gt_slide.info.cells > 100
    originals = {f["id"]: f for f in gt_slide.features}
    for a in report.annotations:
        f = originals[a.id]
        assert a.object_type == "cell" and a.source == "ground-truth"
        assert a.class_name == f["properties"]["classification"]["name"]
        assert a.geometry.equals_exact(shape(f["geometry"]), 0.0)
        assert a.nucleus.equals_exact(shape(f["nucleusGeometry"]), 0.0)
        assert dict(a.measurements) == f["properties"]["measurements"]

    out = tmp_path / "again.geojson"
    written = write_geojson(out, report.annotations)
    assert written.written == len(report.annotations) and not written.warnings
    again = _features(out)
    assert [f["id"] for f in again] == [a.id for a in report.annotations]
    for f in again:
        g = originals[f["id"]]
        assert shape(f["geometry"]).equals_exact(shape(g["geometry"]), 0.0)  # coordinates bit for bit
        assert shape(f["nucleusGeometry"]).equals_exact(shape(g["nucleusGeometry"]), 0.0)
        assert f["properties"]["objectType"] == "cell"
        assert f["properties"]["classification"] == g["properties"]["classification"]
        assert f["properties"]["measurements"] == g["properties"]["measurements"]
    back = read_geojson(out)
    assert [a.geometry.wkb for a in back.annotations] == [a.geometry.wkb for a in report.annotations]


def test_bounds_offset_is_added_on_import_and_subtracted_on_export(gt_slide, tmp_path):
    with open_slide(gt_slide.path) as slide:
        assert slide.bounds[:2] == (0, 0)
        slide.bounds = (1200, 340, 800, 700)  # as OpenSlide reports for a scanner that crops (MRXS, NDPI)
        shifted = read_geojson(gt_slide.geojson, slide)
        plain = read_geojson(gt_slide.geojson)
        for a, b in zip(shifted.annotations, plain.annotations):
            assert a.geometry.equals_exact(shapely.affinity.translate(b.geometry, 1200, 340), 1e-9)
            assert a.nucleus.equals_exact(shapely.affinity.translate(b.nucleus, 1200, 340), 1e-9)
        out = tmp_path / "qupath.geojson"
        write_geojson(out, shifted.annotations, slide)
    originals = {f["id"]: shape(f["geometry"]) for f in gt_slide.features}
    for f in _features(out):
        assert shape(f["geometry"]).equals_exact(originals[f["id"]], 1e-9)
    # an explicit (x, y) works the same as a slide
    assert read_geojson(out, (1200, 340)).annotations[0].geometry.equals_exact(shifted.annotations[0].geometry, 1e-9)


def test_qupath_dialects_are_all_read():
    data = [  # a bare list, as QuPath also accepts
        {"type": "Feature", "id": "PathAnnotationObject",  # QuPath 0.2 kept the type in "id"
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]},
         "properties": {"classification": {"name": "Tumor", "colorRGB": -3670016},
                        "measurements": [{"name": "Area", "value": 100}, {"name": "Bad", "value": None}]}},
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
         "properties": {"object_type": "annotation", "classification": {"names": ["Tumor", "Positive"]},
                        "isLocked": True, "name": "points", "color": [1, 2, 3]}},
        {"type": "Feature", "id": "7d0e5b4e-2bd6-4e4a-8a4b-0d6e4b4a1a11",
         "geometry": {"type": "LineString", "coordinates": [[0, 0, 5], [5, 5, 5]]},
         "properties": {"objectType": "detection", "measurements": {"Length": 7.07}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 0]]]},
         "properties": {"objectType": "cell", "classification": "HSIL"},
         "nucleusGeometry": {"type": "Point", "coordinates": [2, 1]}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]},
         "properties": {"objectType": "tmaCore"}},
    ]
    rep = parse_geojson(data)
    a, b, c, d, e = rep.annotations
    assert a.object_type == "annotation" and a.class_name == "Tumor" and a.classification.color == (200, 0, 0)
    assert a.measurements["Area"] == 100 and a.measurements["Bad"] != a.measurements["Bad"]  # null -> NaN
    assert isinstance(b.geometry, MultiPoint) and b.locked and b.name == "points" and b.color == (1, 2, 3)
    assert b.class_name == "Tumor: Positive"
    assert c.id == "7d0e5b4e-2bd6-4e4a-8a4b-0d6e4b4a1a11" and c.object_type == "detection"
    assert isinstance(c.geometry, LineString) and not c.geometry.has_z
    assert d.object_type == "cell" and d.nucleus.equals(Point(2, 1)) and d.class_name == "HSIL"
    assert e.object_type == "annotation" and any("tmaCore" in w for w in rep.warnings)
    assert len({x.id for x in rep.annotations}) == 5


def test_our_fields_travel_in_metadata(tmp_path):
    a = Annotation(box(0, 0, 5, 5), "detection", "HSIL", score=0.8125, source="model:cervixfm",
                   review=Review("reclassified", previous="LSIL", target="abc", reviewer="dr y", time=12.5),
                   notes="check nucleus", measurements={"x": float("nan")})
    write_geojson(tmp_path / "m.geojson", [a])
    props = _features(tmp_path / "m.geojson")[0]["properties"]
    assert all(isinstance(v, str) for v in props["metadata"].values())  # QuPath keeps string metadata only
    assert props["measurements"] == {"x": None}  # JSON has no NaN
    (b,) = read_geojson(tmp_path / "m.geojson").annotations
    assert b.id == a.id and b.score == a.score and b.source == a.source and b.notes == a.notes
    assert b.review == a.review and b.measurements["x"] != b.measurements["x"]


def test_invalid_geometry_is_repaired_and_empty_geometry_dropped(tmp_path):
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    assert not bowtie.is_valid
    objs = [Annotation(bowtie, classification="HSIL"), Annotation(Polygon()), Annotation(box(20, 20, 30, 30))]
    rep = write_geojson(tmp_path / "fix.geojson", objs)
    assert rep.written == 2 and rep.repaired == 1 and rep.dropped == 1 and len(rep.warnings) == 2
    feats = _features(tmp_path / "fix.geojson")
    fixed = shape(feats[0]["geometry"])
    assert fixed.is_valid and fixed.geom_type == "MultiPolygon" and fixed.area == pytest.approx(50)
    for poly in fixed.geoms:
        ring = list(poly.exterior.coords)
        assert ring[0] == ring[-1]

    data = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10],
                                                                           [0, 0]]]}, "properties": {}},
        {"type": "Feature", "geometry": None, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": []}, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}, "properties": {}},
    ]}
    rep = parse_geojson(data)
    assert len(rep.annotations) == 2 and rep.repaired == 1 and rep.dropped == 2
    assert rep.annotations[0].geometry.is_valid and rep.annotations[0].geometry.area == pytest.approx(50)
    assert any("feature #1" in w for w in rep.warnings) and any("feature #2" in w for w in rep.warnings)


@pytest.mark.parametrize("text, expected", [
    ('{"type": "FeatureCollection", "features": [\n{"type": "Feature",\n', "line 3"),
    ("[1, 2]", "feature #0"),
    ('{"type": "Polygon", "coordinates": []}', "bare Polygon"),
    ('{"type": "FeatureCollection", "features": {}}', "no 'features' list"),
    ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1]]]}, "properties": {}}]',
     "feature #0: malformed Polygon"),
    ('[{"type": "Feature", "properties": {}}, {"type": "Feature", "properties": {}}]', "no 'geometry'"),
    ('[{"type": "Feature", "geometry": {"type": "Circle"}, "properties": {}}]', "unsupported geometry type"),
    ('[{"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, '
     '"properties": {"classification": {"name": "X", "color": "red"}}}]', "not an [r, g, b] colour"),
])
def test_malformed_files_raise_input_error_naming_file_and_place(tmp_path, text, expected):
    path = tmp_path / "bad.geojson"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_geojson(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_missing_file_and_duplicate_ids(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_geojson(tmp_path / "nope.geojson")
    f = {"type": "Feature", "id": "same", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {}}
    rep = parse_geojson([f, f])
    assert rep.annotations[0].id == "same" and rep.annotations[1].id != "same"
    assert any("used twice" in w for w in rep.warnings)


def test_precision_rounds_in_the_file_frame(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1000, (12, 2))
    poly = Polygon(pts).convex_hull
    a = Annotation(poly, "cell", nucleus=poly.centroid.buffer(3))
    rep = write_geojson(tmp_path / "p.geojson", [a], (1200.5, 340), precision=2)
    assert rep.written == 1 and not rep.warnings
    f = _features(tmp_path / "p.geojson")[0]
    for ring in (f["geometry"]["coordinates"][0], f["nucleusGeometry"]["coordinates"][0]):
        arr = np.asarray(ring)
        assert np.array_equal(arr, np.round(arr, 2))  # clean decimals, no 1e-13 noise from the shift
    expect = shapely.transform(poly, lambda c: c - (1200.5, 340))
    assert shape(f["geometry"]).equals_exact(expect, 0.005 * 2**0.5 + 1e-9)
