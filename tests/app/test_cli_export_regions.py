"""``cervixfm export-regions``: regions from a GeoJSON file (QuPath frame), rectangles, class filter, errors."""

from __future__ import annotations

import csv
import json

import pytest
from shapely.geometry import box
from slide_fixtures import synthetic

from cervixfm_app.cli import main
from core.annotations import Annotation, read_geojson, write_geojson


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return synthetic(tmp_path_factory.mktemp("cli_export"), "cli.tiff", width=2048, height=1536, seed=6,
                     abnormal_fraction=0.4, cellularity=0.8)


@pytest.fixture(scope="module")
def regions_file(slide, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_regions") / "regions.geojson"
    objs = [Annotation(box(100, 100, 612, 612), classification="Region*", name="a"),
            Annotation(box(1000, 600, 1256, 856), classification="Ignore*", name="b")]
    write_geojson(path, objs)
    return path


def test_export_annotated_regions_with_cells(slide, regions_file, tmp_path, capsys):
    rc = main(["export-regions", str(slide.path), "--annotations", str(regions_file), "--objects",
               str(slide.geojson), "--class", "Region*", "--mpp", "0.5", "--out", str(tmp_path), "--name", "e",
               "--burn", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    (region,) = out["regions"]
    assert region["level0_box"] == [100, 100, 512, 512] and region["size"] == [256, 256]
    cells = read_geojson(slide.geojson).annotations
    n_cells = sum(a.geometry.intersects(box(100, 100, 612, 612)) for a in cells)
    assert region["objects"] == n_cells + 1 > 1  # the cells plus the region itself
    with open(tmp_path / "e" / "measurements.csv", encoding="utf-8", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == n_cells + 1
    assert (tmp_path / "e" / "region_001_a_overlay.png").is_file()


def test_export_rectangles_and_errors(slide, regions_file, tmp_path, capsys):
    assert main(["export-regions", str(slide.path), "--rect", "0,0,300,200", "--out", str(tmp_path),
                 "--name", "r"]) == 0
    assert "exported 1 region(s) with 0 object(s)" in capsys.readouterr().out
    assert main(["export-regions", str(slide.path), "--out", str(tmp_path)]) == 2
    assert "give --annotations" in capsys.readouterr().err
    assert main(["export-regions", str(slide.path), "--rect", "1,2,3", "--out", str(tmp_path)]) == 2
    assert "X,Y,W,H" in capsys.readouterr().err
    assert main(["export-regions", str(slide.path), "--annotations", str(slide.geojson),
                 "--out", str(tmp_path)]) == 2
    assert "no polygon or rectangle annotations" in capsys.readouterr().err
