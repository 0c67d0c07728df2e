"""Cell and nucleus localisation: drawn shapes with known answers, and synthetic smears with ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from core.cells import CellAnalysis, CellOptions, ClassicalCellDetector, LocaliseOptions, TileFrame
from core.cells.evaluate import duplicate_pairs, localisation_report, read_truth
from core.cells.localise import find_nuclei, split_touching
from core.cells.merge import LocalisationTiles

GLASS = (240.0, 240.0, 238.0)


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def paint(shape, layers):
    """Beer-Lambert: glass x exp(-sum of OD layers); ``layers`` are (mask, od rgb)."""
    od = np.zeros(shape + (3,), np.float32)
    for mask, colour in layers:
        od[mask] += np.asarray(colour, np.float32)
    return np.clip(np.asarray(GLASS) * np.exp(-od), 0, 255).astype(np.uint8)


CYAN = (0.36, 0.175, 0.166)
HAEM = (1.02, 1.18, 0.53)


def test_a_drawn_cell_is_found_with_its_areas_ratio_and_centre():
    shape = (200, 200)
    cell, nucleus = disc(shape, 100, 90, 40), disc(shape, 95, 100, 10)
    rgb = paint(shape, [(cell, CYAN), (nucleus, HAEM)])
    frame = TileFrame(1000.0, 2000.0, (2.0, 2.0), 0.5, GLASS)
    cells = ClassicalCellDetector().detect(rgb, frame)
    assert len(cells) == 1
    c = cells[0]
    # nucleus centre: tile pixel (100, 95) -> level-0 1000 + 100.5 * 2, 2000 + 95.5 * 2
    assert c.centre == pytest.approx((1201.0, 2191.0), abs=0.6)
    m = c.measurements
    assert m["Nucleus: Area µm^2"] == pytest.approx(nucleus.sum() * 0.25, rel=0.1)
    assert m["Cell: Area µm^2"] == pytest.approx(cell.sum() * 0.25, rel=0.05)
    assert m["Cell: Nucleus/Cell area ratio"] == pytest.approx(nucleus.sum() / cell.sum(), rel=0.12)
    assert m["Nucleus: Haematoxylin OD mean"] > 1.0 > m["Cytoplasm: OD mean"]
    assert m["Nucleus: Circularity"] > 0.85
    assert c.polygon.is_valid and c.nucleus.is_valid and c.polygon.contains(c.nucleus.centroid)
    expected = shapely.Point(1000 + 90.5 * 2, 2000 + 100.5 * 2).buffer(80)
    assert c.polygon.intersection(expected).area / c.polygon.union(expected).area > 0.9
    assert not c.truncated


def test_touching_round_nuclei_split_but_a_lobed_nucleus_stays_whole():
    shape = (80, 120)
    pair = disc(shape, 40, 45, 12) | disc(shape, 40, 67, 12)
    assert split_touching(pair, 1.2, 20).max() == 2
    yy, xx = np.mgrid[:shape[0], :shape[1]] - np.array([40, 60])[:, None, None]
    phi, rho = np.arctan2(yy, xx), np.hypot(yy, xx)
    lobed = rho <= 9 * (1 + 0.25 * np.cos(4 * phi))  # a neutrophil-like four-lobed nucleus
    assert split_touching(lobed, 1.2, 20).max() == 1


def test_specks_and_pale_blobs_are_not_nuclei():
    h = np.zeros((100, 100), np.float32)
    h[disc(h.shape, 30, 30, 8)] = 2.0  # a nucleus
    h[disc(h.shape, 70, 70, 1)] = 2.0  # a speck: under 5 µm^2
    h[disc(h.shape, 70, 30, 8)] = 0.5  # above the threshold but far too pale for a nucleus
    labels = find_nuclei(h, 0.5, LocaliseOptions())
    assert labels.max() == 1 and labels[30, 30] == 1


def test_empty_glass_has_no_cells():
    rng = np.random.default_rng(0)
    rgb = np.clip(np.asarray(GLASS) + rng.normal(0, 1.5, (256, 256, 3)), 0, 255).astype(np.uint8)
    assert ClassicalCellDetector().detect(rgb, TileFrame(0, 0, (2.0, 2.0), 0.5, GLASS)) == []


def test_cores_partition_the_slide(smear):
    from core.slides import open_slide

    with open_slide(smear.path) as slide:
        tiles = LocalisationTiles(slide, 0.5, 384, 60.0)
        rng = np.random.default_rng(1)
        pts = rng.uniform(0, 3072, (2000, 2))
        pts[:50] = rng.integers(0, 4, (50, 2)) * 768.0  # points exactly on core borders
        owners = np.array([tiles.owns(i, pts[:, 0], pts[:, 1]) for i in range(len(tiles))])
        assert (owners.sum(axis=0) == 1).all()
        frame, w, h = tiles.frame(5)
        x0, y0, x1, y1 = tiles.cores[5]
        assert frame.x0 <= x0 - 60 / 0.25 and frame.x0 + w * 2 >= x1 + 60 / 0.25
        assert frame.x0 % 2 == 0 and frame.y0 % 2 == 0  # on the level-1 pixel lattice


def test_synthetic_smear_localisation_meets_the_acceptance(smear, smear_cells):
    truth = read_truth(smear.geojson)
    table = smear_cells.table
    report = localisation_report(table.polygons(), table.centres, truth, mpp=0.25)
    solo = report["non_overlapping"]
    assert report["truth_non_overlapping"] >= 30
    assert solo["f1"] >= 0.9, report
    from core.cells.evaluate import match_cells

    d, t, _ = match_cells(list(table.polygons()), truth.polygons)
    keep = ~truth.overlapping[t]
    err_um = np.hypot(*(table.centres[d[keep]] - truth.nucleus_centres[t[keep]]).T) * 0.25
    assert np.median(err_um) < 0.5 and (err_um <= 3.0).mean() >= 0.97
    assert (~table.truncated).all()


def test_tile_borders_give_no_duplicates_and_do_not_change_the_cells(smear, smear_cells, tmp_path):
    small = smear_cells.table  # 384-px cores: 16 tiles, a border every 192 µm
    assert duplicate_pairs(small.nuclei(), small.centres, 0.1) == []
    big = CellAnalysis(smear.path, tmp_path, None, options=CellOptions(core_px=2048)).run().table  # one tile
    assert abs(len(big) - len(small)) <= 2
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(big.centres).query(small.centres)
    assert (dist < 1.0).mean() >= 0.97
