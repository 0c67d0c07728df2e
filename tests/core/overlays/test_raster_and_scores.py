"""The numpy overlay rasteriser draws outlines where they are, in class colours, clipped and dotted as designed;
tile scores land on their grid cells and are coloured through the colormap."""

from __future__ import annotations

import numpy as np
import shapely

from core.overlays import ObjectSet, TileScores, colorize, colormap_lut, render_objects


def argb(rgb):
    return 0xFF000000 | (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


def test_box_outline_drawn_at_its_place_in_its_colour():
    objects = ObjectSet.from_boxes([[100, 200, 80, 40]], [0], ["HSIL"], [(215, 30, 30)])
    canvas = render_objects(objects.snapshot(), x0=0, y0=0, ds=2.0, width=128, height=128)
    drawn = np.argwhere(canvas != 0)
    assert set(np.unique(canvas[canvas != 0]).tolist()) == {argb((215, 30, 30))}
    # level-0 box 100..180 x 200..240 at 2 level-0 px per pixel: columns 50..90, rows 100..120
    assert drawn[:, 1].min() == 50 and drawn[:, 1].max() == 90
    assert drawn[:, 0].min() == 100 and drawn[:, 0].max() == 120
    assert canvas[110, 70] == 0  # the inside stays transparent
    assert canvas[100, 70] != 0 and canvas[120, 70] != 0 and canvas[110, 50] != 0 and canvas[110, 90] != 0


def test_tiny_objects_become_dots_and_hidden_classes_vanish():
    objects = ObjectSet.from_boxes([[1000, 1000, 20, 20], [3000, 1000, 20, 20]], [0, 1], ["a", "b"],
                                   [(255, 0, 0), (0, 0, 255)])
    canvas = render_objects(objects.snapshot(), 0, 0, 64.0, 64, 64)
    assert np.count_nonzero(canvas) == 2
    assert canvas[int(1010 // 64), int(1010 // 64)] == argb((255, 0, 0))
    assert canvas[int(1010 // 64), int(3010 // 64)] == argb((0, 0, 255))
    hidden = render_objects(objects.snapshot(), 0, 0, 64.0, 64, 64, hidden_classes=frozenset({1}))
    assert np.count_nonzero(hidden) == 1


def test_huge_polygon_seen_up_close_is_clipped_not_sampled_whole():
    big = shapely.box(-1e6, 500, 1e6, 2e6)  # a horizontal edge at y = 500 crossing the whole canvas
    objects = ObjectSet.from_geometries([big], [0], ["region"], [(0, 200, 0)])
    canvas = render_objects(objects.snapshot(), x0=0, y0=0, ds=1.0, width=256, height=1024)
    rows = np.unique(np.argwhere(canvas != 0)[:, 0])
    assert rows.tolist() == [500]
    assert np.count_nonzero(canvas[500]) == 256


def test_points_drawn_as_markers():
    objects = ObjectSet.from_geometries([shapely.Point(64, 64)], [0], ["mitosis"], [(10, 20, 30)])
    canvas = render_objects(objects.snapshot(), 0, 0, 1.0, 128, 128, point_px=2)
    assert np.count_nonzero(canvas) == 25 and canvas[64, 64] == argb((10, 20, 30))


def test_tile_scores_on_an_overlapping_grid():
    # 3 x 2 tiles of 448 px at a stride of 224 (50% overlap): cells of 224 px, each tile spanning 2 x 2 cells
    xs, ys = np.meshgrid(np.arange(3) * 224 + 1000, np.arange(2) * 224 + 500)
    boxes = np.column_stack([xs.ravel(), ys.ravel(), np.full(6, 448), np.full(6, 448)])
    scores = TileScores(boxes)
    p = scores.placement
    assert (p.x0, p.y0, p.cell_w, p.cell_h, p.cols, p.rows) == (1000, 500, 224, 224, 4, 3)
    assert np.isnan(scores.grid_values()).all()
    seen = []
    scores.subscribe(seen.append)
    scores.set_values([0, 5], [0.25, 0.75])
    grid = scores.grid_values()
    assert grid[0, 0] == 0.25 and grid[1, 1] == 0.25  # tile 0 covers cells (0..1, 0..1)
    assert grid[2, 3] == 0.75 and grid[1, 2] == 0.75  # tile 5 (col 2, row 1) covers cells (2..3, 1..2)
    assert grid[1, 1] == 0.25 and np.isnan(grid[0, 2])  # cells shared with tiles without a value
    assert np.isnan(grid[0, 3])
    assert seen == [(1000.0, 500.0, 1000 + 2 * 224 + 448.0, 500 + 224 + 448.0)]
    assert scores.value_at(1100, 600) == 0.25 and np.isnan(scores.value_at(10, 10))


def test_colorize_uses_lut_ends_and_makes_nan_transparent():
    lut = colormap_lut("viridis")
    out = colorize(np.array([[0.0, 1.0, np.nan, 5.0]]), lut, 0.0, 1.0)
    assert out[0, 2] == 0
    assert out[0, 0] == argb(tuple(int(v) for v in lut[0]))
    assert out[0, 1] == argb(tuple(int(v) for v in lut[-1])) == out[0, 3]  # clipped above vmax
    half = colorize(np.array([1.0]), lut, 0.0, 1.0, alpha=128)[0]
    assert half >> 24 == 128 and (half >> 16) & 0xFF <= lut[-1][0]  # premultiplied
