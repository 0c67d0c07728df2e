"""The cell table (ragged outlines), its file, the journal it is assembled from, and the exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import Point, Polygon, shape

from core.cells import Cell, CellTable, load_cells, save_cells
from core.cells.export import cell_ids, write_csv, write_geojson
from core.cells.journal import CellJournal
from core.errors import InputError

NAMES = ["Cell: Area µm^2", "Nucleus: Area µm^2"]


def make_cells(n: int, x0: float = 0.0, seed: int = 0) -> list[Cell]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cx, cy = x0 + 100.0 * i + rng.uniform(0, 10), 50.0 + rng.uniform(0, 10)
        cell = Point(cx, cy).buffer(20 + i, quad_segs=4 + i)
        out.append(Cell(Polygon(cell.exterior), Polygon(Point(cx, cy).buffer(5).exterior), (cx, cy),
                        {NAMES[0]: cell.area / 16, NAMES[1]: 25 * np.pi / 16}, truncated=i == 1))
    return out


def table_of(cells, tile=0):
    boxes = np.array([[c.centre[0] - 224, c.centre[1] - 224, 448, 448] for c in cells]).reshape(-1, 4)
    return CellTable.from_cells(cells, tile, boxes)


def test_outlines_survive_the_ragged_layout_take_and_concat():
    cells = make_cells(5)
    table = table_of(cells)
    for poly, cell in zip(table.polygons(), cells):
        assert poly.equals_exact(cell.polygon, 1e-3)
    sub = table.take([3, 0])
    assert sub.nuclei()[0].equals_exact(cells[3].nucleus, 1e-3) and sub.truncated.tolist() == [False, False]
    joined = CellTable.concat([table.take([0, 1]), CellTable.empty(NAMES), table.take([2, 3, 4])])
    assert len(joined) == 5 and all(a.equals_exact(b.polygon, 1e-3) for a, b in zip(joined.polygons(), cells))
    np.testing.assert_allclose(joined.boxes()[2], [*np.array(cells[2].polygon.bounds[:2]),
                                                    *np.subtract(cells[2].polygon.bounds[2:],
                                                                 cells[2].polygon.bounds[:2])], atol=1e-3)
    assert table.take(np.array([True, False, True, False, False])).centres.shape == (2, 2)


def test_cell_file_round_trip(tmp_path):
    table = table_of(make_cells(4))
    table.embeddings = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    table.heads["cells"] = {"probs": np.full((4, 2), 0.5, np.float32), "abnormality": np.full(4, 0.5, np.float32)}
    save_cells(tmp_path / "cells.h5", table, {"status": "complete", "model": {"name": "x"}}, {"cells": ["a", "b"]})
    back = load_cells(tmp_path)
    assert back.meta["status"] == "complete" and back.head_classes == {"cells": ["a", "b"]}
    for name in ("centres", "cell_coords", "cell_offsets", "nucleus_offsets", "measurements", "tile_index",
                 "truncated", "crop_boxes", "embeddings"):
        np.testing.assert_array_equal(getattr(back.table, name), getattr(table, name))
    assert back.table.measurement_names == NAMES
    assert load_cells(tmp_path, embeddings=False).table.embeddings is None
    with pytest.raises(InputError, match="run the cell analysis"):
        load_cells(tmp_path / "nothing")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="damaged"):
        load_cells(tmp_path / "bad.h5")


def test_journal_orders_by_tile_and_takes_a_twice_written_tile_once(tmp_path):
    journal = CellJournal(tmp_path / "work", {"run": 1})
    a, b = table_of(make_cells(2, 0.0), tile=4), table_of(make_cells(3, 1000.0), tile=1)
    journal.append_tiles([4], a)
    journal.append_tiles([1, 2], b)  # tile 2 had no cells
    journal.append_tiles([4], a)  # a crash between writing and bookkeeping wrote tile 4 again
    assert journal.done_tiles() == {1, 2, 4}
    got = journal.collect_table()
    assert got.tile_index.tolist() == [1, 1, 1, 4, 4]
    np.testing.assert_allclose(got.centres, np.concatenate([b.centres, a.centres]))
    assert CellJournal(tmp_path / "work", {"run": 2}).done_tiles() == set()  # another run's parts are discarded


def test_geojson_and_csv(tmp_path):
    table = table_of(make_cells(3))
    table.heads["h"] = {"probs": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32),
                        "abnormality": np.array([0.1, 0.8, 0.4], np.float32)}
    ids = cell_ids(table, "slide")
    assert ids == cell_ids(table, "slide") and len(set(ids)) == 3 and ids != cell_ids(table, "other")
    write_geojson(tmp_path / "c.geojson", table, "slide", "h", ["normal", "bad"], [[0, 255, 0], [255, 0, 0]],
                  offset=(10.0, 20.0), ids=ids)
    features = json.loads((tmp_path / "c.geojson").read_text())["features"]
    assert [f["properties"]["classification"]["name"] for f in features] == ["normal", "bad", "normal"]
    assert features[1]["properties"]["classification"]["color"] == [255, 0, 0]
    assert features[1]["properties"]["measurements"]["Class probability: bad"] == pytest.approx(0.8)
    moved = shape(features[0]["geometry"])
    assert moved.centroid.x == pytest.approx(table.polygons()[0].centroid.x - 10, abs=0.05)
    assert moved.centroid.y == pytest.approx(table.polygons()[0].centroid.y - 20, abs=0.05)
    write_csv(tmp_path / "r.csv", table, ids, "h", ["normal", "bad"], order=[1, 2, 0])
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("rank,id,x,y") and lines[1].startswith(f"1,{ids[1]},")
    assert lines[1].split(",")[-4:] == ["bad", "0.20000", "0.80000", "0.80000"]
