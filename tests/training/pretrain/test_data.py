"""Data: the same samples, crops and masks on 1 or N processes; every image once per pass; slide tiles on cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretrain_support import tiny_config
from training.pretrain.data import BatchPositions, SlideTileSource, split_paths
from training.pretrain.trainer import build_data


def test_two_processes_see_exactly_the_global_batch_of_one(texture_images, tmp_path):
    cfg1 = tiny_config(texture_images, tmp_path, "train.batch_size_per_gpu=6")
    cfg2 = tiny_config(texture_images, tmp_path, "train.batch_size_per_gpu=3")
    ds1, col1, _, _ = build_data(cfg1, 0, 1)
    parts = [build_data(cfg2, r, 2) for r in range(2)]
    for iteration in (0, 5):
        (positions,) = list(BatchPositions(iteration, iteration + 1, 6))
        whole = col1([ds1[p] for p in positions])
        halves = []
        for r, (ds, col, _, _) in enumerate(parts):
            (mine,) = list(BatchPositions(iteration, iteration + 1, 3, rank=r, world_size=2))
            halves.append(col([ds[p] for p in mine]))
        for crop in range(2):  # crop-major stacking: [crop c of every sample]
            expect = whole["global_crops"][crop * 6:(crop + 1) * 6]
            got = torch.cat([h["global_crops"][crop * 3:(crop + 1) * 3] for h in halves])
            assert torch.equal(expect, got)
            assert torch.equal(whole["masks"][crop * 6:(crop + 1) * 6],
                               torch.cat([h["masks"][crop * 3:(crop + 1) * 3] for h in halves]))
        assert whole["iteration"] == iteration and int(whole["masks"].any(1).sum()) == 6  # half of 12 global crops


def test_each_image_is_seen_once_per_pass_in_a_seeded_order(texture_images, tmp_path):
    cfg = tiny_config(texture_images, tmp_path)
    ds, _, images, _ = build_data(cfg, 0, 1)
    n = len(images)
    first = [int(ds._order(0)[i]) for i in range(n)]
    second = [int(ds._order(1)[i]) for i in range(n)]
    assert sorted(first) == list(range(n)) and sorted(second) == list(range(n)) and first != second
    again, _, _, _ = build_data(cfg, 0, 1)
    assert [int(again._order(0)[i]) for i in range(n)] == first


def test_slide_tiles_come_from_the_cell_bearing_area(tmp_path_factory):
    from core.slides import detect_foreground, open_slide
    from slide_fixtures import synthetic

    truth = synthetic(tmp_path_factory.mktemp("slides"), "pretrain.tiff", width=2048, height=2048, seed=3,
                      density=0.6)
    images, slides = split_paths([truth.path.parent])
    assert slides == [truth.path] and images == []
    source = SlideTileSource(slides, tile_size=64, tile_mpp=1.0)
    with open_slide(truth.path) as slide:
        fg = detect_foreground(slide)
        background = np.array(fg.background, np.float64)
    rng = np.random.default_rng(0)
    for _ in range(20):
        k, x, y, w0, h0 = source.tile_box(rng)
        assert fg.contains(x + w0 / 2, y + h0 / 2)
        assert w0 == pytest.approx(64 * 1.0 / 0.25)  # 64 px at 1 µm/px on a 0.25 µm/px slide
    tiles = [source.random_tile(np.random.default_rng(s)) for s in range(10)]
    assert all(t.shape == (64, 64, 3) and t.dtype == np.uint8 for t in tiles)
    # tiles show cells: many pixels differ clearly from the glass colour
    assert np.mean([(np.abs(t.astype(float) - background).max(-1) > 30).mean() for t in tiles]) > 0.05


def test_plain_images_are_not_mistaken_for_slides(texture_images):
    images, slides = split_paths([texture_images])
    assert images == [texture_images] and slides == []
