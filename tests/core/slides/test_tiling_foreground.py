"""TileGrid at a target MPP and cytology foreground detection, checked against synthetic ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely import STRtree
from shapely.geometry import box, shape

from core.slides import TileGrid, detect_foreground, open_slide


def test_grid_geometry_without_mask(synth):
    with open_slide(synth.path) as slide:
        grid = TileGrid(slide, tile_px=224, mpp=0.5)
        assert grid.size0 == (448, 448) and grid.level == 1
        assert grid.cols == grid.rows == math.ceil(4096 / 448)
        assert len(grid) == grid.n_total == grid.cols * grid.rows and grid.dropped_fraction == 0.0
        assert grid.coords.dtype == np.int64 and grid.coords.shape == (len(grid), 2)
        assert grid.coords.min() == 0 and grid.coords.max() < 4096
        t = grid.tile(grid.cols + 1)
        assert (t.col, t.row, t.x, t.y, t.w, t.h) == (1, 1, 448, 448, 448, 448)
        img = grid.read(t)
        assert img.shape == (224, 224, 3) and np.array_equal(img, slide.read_region((448, 448), 1, (224, 224)))
        last = grid.read(len(grid) - 1)  # partial edge tile: padded white
        assert (last[-10:, -10:] == 255).all()


def test_grid_overlap_and_native_resolution(synth):
    with open_slide(synth.path) as slide:
        grid = TileGrid(slide, tile_px=256, mpp=None, overlap_px=64)
        assert grid.size0 == (256, 256) and grid.stride0 == (192.0, 192.0) and grid.level == 0
        xs = np.unique(grid.coords[:, 0])
        assert np.all(np.diff(xs) == 192) and xs[-1] + 256 >= 4096
        fine = TileGrid(slide, tile_px=224, mpp=0.125)  # finer than the scan: read level 0, upsample
        assert fine.size0 == (112, 112) and fine.level == 0 and fine.read(5).shape == (224, 224, 3)
        with pytest.raises(ValueError):
            TileGrid(slide, tile_px=224, overlap_px=224)


def _tiles_with_cells(truth, grid_all):
    polys = [shape(f["geometry"]) for f in truth.features]
    tree = STRtree(polys)
    w, h = grid_all.size0
    return {(int(x), int(y)) for x, y in grid_all.coords
            if len(tree.query(box(x, y, x + w, y + h), predicate="intersects"))}


@pytest.mark.parametrize("which", ["synth", "sparse"])
def test_foreground_keeps_tiles_with_cells(which, request, capsys):
    truth = request.getfixturevalue(which)
    with open_slide(truth.path) as slide:
        fg = detect_foreground(slide)
        full = TileGrid(slide, tile_px=224, mpp=0.5)
        kept = TileGrid(slide, tile_px=224, mpp=0.5, foreground=fg)
    with_cells = _tiles_with_cells(truth, full)
    kept_set = {(int(x), int(y)) for x, y in kept.coords}
    recall = len(with_cells & kept_set) / len(with_cells)
    with capsys.disabled():
        print(f"\n[{which}] cells={len(truth.features)} tiles={full.n_total} with cells={len(with_cells)} "
              f"kept={kept.n_kept} recall={recall:.3f} dropped={kept.dropped_fraction:.1%} "
              f"cell-bearing area={fg.fraction:.1%}")
    assert recall >= 0.98
    assert kept.n_kept <= full.n_total
    if which == "sparse":
        assert kept.dropped_fraction >= 0.4


def test_foreground_fraction_tracks_ground_truth(synth):
    from shapely.ops import unary_union

    with open_slide(synth.path) as slide:
        fg = detect_foreground(slide)
    truth_fraction = unary_union([shape(f["geometry"]) for f in synth.features]).area / (4096 * 4096)
    assert 0.5 * truth_fraction < fg.fraction < 2.0 * truth_fraction
    assert fg.kept_fraction >= fg.fraction
    assert fg.mask.shape == fg.cells.shape and fg.mask.dtype == bool
    # Mask resolution is about 4 µm/px.
    assert fg.downsample[0] * slide.mpp[0] == pytest.approx(4.0, rel=0.05)
    bg = np.asarray(synth.info.style["background"])
    assert np.abs(np.asarray(fg.background) - bg).max() < 4


def test_foreground_on_plain_image(plain_images):
    with open_slide(plain_images["png"]) as slide:
        fg = detect_foreground(slide)
        grid = TileGrid(slide, 224, 0.5, foreground=fg)
        full = TileGrid(slide, 224, 0.5)
    with_cells = _tiles_with_cells(plain_images["truth"], full)
    kept = {(int(x), int(y)) for x, y in grid.coords}
    assert len(with_cells & kept) / len(with_cells) >= 0.98


def test_coverage_queries(synth):
    with open_slide(synth.path) as slide:
        fg = detect_foreground(slide)
    assert fg.coverage([-10000], [-10000], 100, 100)[0] == 0.0
    assert fg.coverage([0], [0], 4096, 4096)[0] == pytest.approx(fg.kept_fraction, abs=1e-9)
    x, y = (int(v) for v in synth.nucleus_centres()[0])
    assert fg.contains(x, y) and fg.coverage([x - 50], [y - 50], 100, 100)[0] > 0


def test_white_padding_is_not_foreground():
    from core.slides.foreground import classify_pixels

    img = np.full((100, 100, 3), 238, np.uint8)
    img[:, :40] = 255  # scanner padding
    img[50:55, 60:65] = (120, 90, 160)  # one nucleus
    mask, bg, _ = classify_pixels(img)
    assert bg == (238, 238, 238) and mask.sum() == 25
    white = np.full((50, 50, 3), 255, np.uint8)
    white[10:20, 10:20] = 200
    mask, bg, _ = classify_pixels(white)
    assert bg == (255, 255, 255) and mask.sum() == 100
