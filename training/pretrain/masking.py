"""iBOT's block-wise masks over the patch grid of a global crop, and their assignment across a batch.

Masking rectangles of patches rather than scattered single patches forces the student to predict a region from its
surroundings, which is what makes the patch loss teach local semantics. Blocks are laid one at a time (BEiT's
procedure): a block of a random area (at least ``min_num_patches``) and log-uniform aspect ratio in
[``min_aspect``, 1 / ``min_aspect``], placed at random; it is kept only if it adds at least one new patch and does
not overshoot the target count; up to 10 tries per block, and masking stops early when a block cannot be placed.
So an image never gets more masked patches than asked for, and usually exactly that many.

Across a batch (DINOv2's collation), ``mask_probability`` of the images are masked, with target ratios spread
evenly over [min, max]: image i of the masked ones draws its ratio uniformly within the i-th of equal sub-intervals.
The assignment to images is shuffled.
"""

from __future__ import annotations

import math

import numpy as np


class MaskingGenerator:
    def __init__(self, grid: tuple[int, int] | int, min_num_patches: int = 4, max_num_patches: float | None = None,
                 min_aspect: float = 0.3, max_aspect: float | None = None, max_tries: int = 10):
        self.height, self.width = (grid, grid) if isinstance(grid, int) else grid
        self.num_patches = self.height * self.width
        self.min_num_patches = min_num_patches
        self.max_num_patches = max_num_patches  # per block; None = the whole remaining target
        max_aspect = max_aspect or 1.0 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.max_tries = max_tries

    def _add_block(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> int:
        """Try to mask one more block adding at most ``budget`` new patches; returns how many were added."""
        for _ in range(self.max_tries):
            # uniform between the two ends, whichever is larger (a budget below the block minimum still works)
            area = self.min_num_patches + (budget - self.min_num_patches) * rng.random()
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if 0 < h < self.height and 0 < w < self.width:
                top = int(rng.integers(0, self.height - h + 1))
                left = int(rng.integers(0, self.width - w + 1))
                window = mask[top:top + h, left:left + w]
                added = h * w - int(window.sum())
                if 0 < added <= budget:
                    window[...] = True
                    return added
        return 0

    def __call__(self, num_masking_patches: int, rng: np.random.Generator) -> np.ndarray:
        """A (height, width) bool mask with at most ``num_masking_patches`` patches set."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masking_patches:
            budget = num_masking_patches - count
            if self.max_num_patches is not None:
                budget = min(budget, int(self.max_num_patches))
            added = self._add_block(mask, budget, rng)
            if added == 0:
                break
            count += added
        return mask


def batch_masks(n_images: int, generator: MaskingGenerator, ratio_min_max: tuple[float, float],
                mask_probability: float, rng: np.random.Generator) -> np.ndarray:
    """(n_images, H*W) bool masks for a batch of global crops, as DINOv2's collation assigns them."""
    n_patches = generator.num_patches
    n_masked_images = int(n_images * mask_probability)
    edges = np.linspace(ratio_min_max[0], ratio_min_max[1], n_masked_images + 1)
    masks = []
    for i in range(n_masked_images):
        ratio = rng.uniform(edges[i], edges[i + 1])
        masks.append(generator(int(n_patches * ratio), rng))
    for _ in range(n_masked_images, n_images):
        masks.append(np.zeros((generator.height, generator.width), dtype=bool))
    order = rng.permutation(n_images)
    return np.stack([masks[i] for i in order]).reshape(n_images, n_patches)


def make_generator(global_crops_size: int, patch_size: int) -> MaskingGenerator:
    """DINOv2's settings: blocks of at least 4 patches, at most half the grid per block."""
    side = global_crops_size // patch_size
    return MaskingGenerator((side, side), max_num_patches=0.5 * side * side)
