"""Region export (crops + GeoJSON in crop pixels + measurements CSV) and the core overlay renderer."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import Point, Polygon, box, shape

from core.annotations import Annotation, AnnotationStore, export_regions, read_geojson, render_overlay
from core.annotations import export as export_mod
from core.errors import InputError
from core.slides import open_slide


@pytest.fixture(scope="module")
def cells(gt_slide):
    return read_geojson(gt_slide.geojson, source="ground-truth").annotations


def test_export_regions_writes_crops_objects_and_measurements(gt_slide, cells, tmp_path):
    region = Annotation(Polygon([(300, 400), (1300, 350), (1250, 1200), (350, 1100)]), classification="Region*",
                        name="area 1")
    rect = (1500, 1500, 400, 300)
    store = AnnotationStore(cells + [region])
    with open_slide(gt_slide.path) as slide:
        result = export_regions(slide, [region, rect], tmp_path, objects=store, mpp=0.5, name="case", burn=True)
        expected_crop = slide.read_scaled(300, 350, 1000, 850, 500, 425)
    folder = tmp_path / "case"
    assert result.folder == folder and not list(tmp_path.glob(".*tmp"))
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["manifest.json", "measurements.csv", "region_001_area_1.geojson", "region_001_area_1.png",
                     "region_001_area_1_overlay.png", "region_002.geojson", "region_002.png",
                     "region_002_overlay.png"]
    manifest = json.loads((folder / "manifest.json").read_text())
    first, second = manifest["regions"]
    assert first["level0_box"] == [300, 350, 1000, 850] and first["size"] == [500, 425]
    assert first["mpp"] == [0.5, 0.5] and manifest["downsample"] == 2.0 and first["id"] == region.id
    assert second["level0_box"] == [1500, 1500, 400, 300] and second["size"] == [200, 150]

    crop = np.asarray(Image.open(folder / "region_001_area_1.png"))
    assert np.array_equal(crop, expected_crop)  # the crop is exactly what the slide gives for that box

    # objects: exactly those overlapping the region polygon (not just its bounding box), in crop pixels
    want = {a.id for a in cells if a.geometry.intersects(region.geometry)} | {region.id}
    assert len(want) > 10
    feats = json.loads((folder / "region_001_area_1.geojson").read_text())["features"]
    assert {f["id"] for f in feats} == want
    by_id = {a.id: a for a in cells + [region]}
    for f in feats:
        level0 = by_id[f["id"]].geometry
        expect = shapely.transform(level0, lambda c: (c - (300, 350)) * 0.5)
        assert shape(f["geometry"]).equals_exact(expect, 1e-9)
        if f["properties"]["objectType"] == "cell":
            assert "nucleusGeometry" in f and shape(f["nucleusGeometry"]).within(shape(f["geometry"]).buffer(2))

    with open(folder / "measurements.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == result.objects == len(want) + second["objects"]
    for row in rows:
        if row["object_type"] == "cell":  # area from the geometry agrees with the ground truth's measurement
            assert float(row["area_um2"]) == pytest.approx(float(row["Cell: Area µm^2"]), rel=2e-3)
            c = by_id[row["id"]].geometry.centroid
            assert (float(row["centroid_x"]), float(row["centroid_y"])) == pytest.approx((c.x, c.y), abs=0.01)
    assert {r["region"] for r in rows} == {"region_001_area_1", "region_002"}

    overlay = np.asarray(Image.open(folder / "region_001_area_1_overlay.png"))
    assert overlay.shape == crop.shape and (overlay != crop).any(axis=-1).mean() < 0.2


def test_export_refuses_upsampling_huge_crops_and_empty_input(gt_slide, tmp_path, monkeypatch):
    with open_slide(gt_slide.path) as slide:
        with pytest.raises(InputError, match="upsampled"):
            export_regions(slide, [(0, 0, 100, 100)], tmp_path, mpp=0.1)
        with pytest.raises(InputError, match="no regions"):
            export_regions(slide, [], tmp_path)
        with pytest.raises(InputError, match="no area"):
            export_regions(slide, [Annotation(Point(5, 5))], tmp_path)
        with pytest.raises(InputError, match="either"):
            export_regions(slide, [(0, 0, 100, 100)], tmp_path, mpp=0.5, magnification=20)
        monkeypatch.setattr(export_mod, "MAX_CROP_PIXELS", 10_000)
        with pytest.raises(InputError, match="coarser resolution"):
            export_regions(slide, [(0, 0, 200, 200)], tmp_path)
        # magnification 10x = 1 µm/px = downsample 4
        monkeypatch.setattr(export_mod, "MAX_CROP_PIXELS", 10**8)
        r = export_regions(slide, [(0, 0, 400, 200)], tmp_path, magnification=10, name="m", image_format="jpg")
        assert r.regions[0]["size"] == [100, 50] and (r.folder / "region_001.jpg").is_file()
        again = export_regions(slide, [(0, 0, 40, 40)], tmp_path, name="m")
        assert again.folder.name == "m-2"


def test_a_failed_export_leaves_nothing_behind(gt_slide, tmp_path):
    with open_slide(gt_slide.path) as slide:
        calls = []
        real = slide.read_scaled

        def flaky(*args):
            calls.append(args)
            if len(calls) == 2:
                raise OSError("disk went away")
            return real(*args)

        slide.read_scaled = flaky
        with pytest.raises(OSError):
            export_regions(slide, [(0, 0, 64, 64), (64, 64, 64, 64)], tmp_path, name="x")
    assert list(tmp_path.iterdir()) == []


def test_render_overlay_draws_outlines_fills_points_at_the_right_pixels():
    white = np.full((100, 120, 3), 255, np.uint8)
    sq = Annotation(box(1010, 1010, 1090, 1050), classification="HSIL")  # level-0; drawn at origin 1000, x0.5
    pt = Annotation(Point(1180, 1100), classification="NILM")
    out = render_overlay(white, [sq, pt], origin=(1000, 1000), scale=0.5, thickness=1, point_radius=6)
    hsil, nilm = np.array([215, 30, 30]), np.array([40, 160, 80])
    assert (out[5, 5:46] == hsil).all() and (out[25, 5:46] == hsil).all()  # top and bottom edges
    assert (out[5:26, 5] == hsil).all() and (out[5:26, 45] == hsil).all()  # left and right edges
    assert (out[15, 20] == 255).all() and (out[4, 20] == 255).all()  # inside and outside untouched
    assert (out[50, 90 + 6] == nilm).all() and (out[50, 90] == 255).all()  # a ring around the point
    assert (white == 255).all()  # the input is not modified

    filled = render_overlay(white, [sq], origin=(1000, 1000), scale=0.5, thickness=3, fill_opacity=0.5)
    assert np.allclose(filled[15, 20], (255 + hsil) / 2, atol=1)
    assert (filled[4, 20] == hsil).all() and (filled[6, 20] == hsil).all()  # 3 px wide edge around row 5
    assert (filled[2, 20] == 255).all()
    with pytest.raises(ValueError):
        render_overlay(white.astype(np.float32), [sq])
