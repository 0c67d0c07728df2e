"""iBOT masks: how many images are masked, with which ratios, and in which shapes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from training.pretrain.masking import MaskingGenerator, batch_masks, make_generator


def test_half_of_the_images_are_masked_with_ratios_spread_over_the_range():
    gen = make_generator(224, 16)  # 14 x 14 patches, DINOv2's settings
    n_images, n_patches = 64, 196
    rng = np.random.default_rng(0)
    for trial in range(3):
        masks = batch_masks(n_images, gen, (0.1, 0.5), 0.5, rng)
        assert masks.shape == (n_images, n_patches) and masks.dtype == bool
        counts = masks.sum(1)
        masked = np.sort(counts[counts > 0])
        assert len(masked) == 32  # int(64 * 0.5) images, each with at least one block
        # the i-th smallest ratio lies in the i-th of 32 equal sub-intervals of [0.1, 0.5] (never above its top:
        # the generator never overshoots its target; rarely a little below it, when a block cannot be placed)
        edges = np.linspace(0.1, 0.5, 33)
        ratios = masked / n_patches
        assert np.all(ratios <= edges[1:] + 1e-9)
        assert np.all(ratios >= edges[:-1] - 0.03)
        assert ratios.min() >= 0.07 and ratios.max() <= 0.5


def test_generator_hits_its_target_with_blocks_of_at_least_four_patches():
    # BEiT's procedure: block areas of at least 4 patches (rounding the sides can give 3), except the last fill-up
    # of a remaining budget below 4; so nearly every masked patch lies in a block of 4 or more.
    gen = MaskingGenerator((14, 14), max_num_patches=98)
    rng = np.random.default_rng(1)
    shortfalls, in_small, total = [], 0, 0
    for target in range(19, 99, 4):
        mask = gen(target, rng)
        assert mask.sum() <= target
        shortfalls.append(target - mask.sum())
        labels, n = ndimage.label(mask)
        sizes = np.bincount(labels.ravel())[1:]
        in_small += sizes[sizes < 4].sum()
        total += sizes.sum()
    assert np.mean(shortfalls) < 2.0
    assert in_small / total < 0.1  # blocks, not scattered patches


def test_block_aspect_ratios_stay_within_the_log_uniform_range():
    gen = MaskingGenerator((14, 14), min_num_patches=4, max_num_patches=30)
    rng = np.random.default_rng(2)
    for _ in range(200):
        mask = gen(12, rng)
        labels, n = ndimage.label(mask)
        if n != 1:
            continue  # overlapping blocks merge into other shapes
        rows, cols = np.nonzero(mask)
        h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
        if h * w == mask.sum():  # one rectangle
            assert 0.3 / 1.5 <= h / w <= 1.5 / 0.3  # aspect in [0.3, 3.3] up to rounding of small sides


def test_no_masks_when_the_probability_is_zero_and_same_masks_for_the_same_seed():
    gen = make_generator(64, 16)
    assert not batch_masks(8, gen, (0.1, 0.5), 0.0, np.random.default_rng(0)).any()
    a = batch_masks(8, gen, (0.1, 0.5), 0.5, np.random.default_rng(5))
    b = batch_masks(8, gen, (0.1, 0.5), 0.5, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
