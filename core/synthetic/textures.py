"""Periodic noise textures for cytoplasm and chromatin, pre-shrunk for every pyramid level.

Textures are functions of level-0 position (wrapping every ``PERIOD`` pixels), not of the tile being drawn, so
neighbouring tiles continue each other seamlessly. Lower levels use block means of the level-0 texture (a
mip-map): the fine grain then fades exactly as it would when the scanner image itself is shrunk, which keeps the
pyramid levels consistent with each other.
"""

from __future__ import annotations

import numpy as np

PERIOD = 512


def smooth_noise(rng: np.random.Generator, sigma: float, period: int = PERIOD) -> np.ndarray:
    """Wrap-around Gaussian-filtered white noise, zero mean and unit standard deviation at level 0."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal((period, period)), sigma, mode="wrap")
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


class Texture:
    """One periodic texture with a mip chain for power-of-two downsamples."""

    def __init__(self, base: np.ndarray) -> None:
        self.mips = {1: base}
        self._tiled: dict[int, np.ndarray] = {}
        ds = 1
        cur = base
        while cur.shape[0] > 1:
            n = cur.shape[0] // 2
            cur = cur.reshape(n, 2, n, 2).mean(axis=(1, 3))
            ds *= 2
            self.mips[ds] = cur

    def window(self, ds: float, col0: int, row0: int, w: int, h: int) -> np.ndarray:
        """Texture for pixels [row0, row0+h) x [col0, col0+w) of the level with downsample ``ds`` (read-only)."""
        key = 1
        while key * 2 <= ds and key * 2 in self.mips:
            key *= 2
        mip = self.mips[key]
        if mip.shape[0] == 1 or ds > PERIOD:
            return np.zeros((h, w), np.float32)
        p = mip.shape[0]
        if ds == key:  # pyramid levels: a slice of the periodically repeated mip
            big = self._repeated(key, h, w)
            r, c = row0 % p, col0 % p
            return big[r:r + h, c:c + w]
        # Thumbnails at other downsamples: sample the finer mip at the matching positions.
        step = ds / key
        cols = (np.floor((col0 + np.arange(w) + 0.5) * step).astype(np.int64)) % p
        rows = (np.floor((row0 + np.arange(h) + 0.5) * step).astype(np.int64)) % p
        return mip[np.ix_(rows, cols)]

    def _repeated(self, key: int, h: int, w: int) -> np.ndarray:
        mip = self.mips[key]
        p = mip.shape[0]
        big = self._tiled.get(key)
        if big is None or big.shape[0] < p + h or big.shape[1] < p + w:
            reps = (-(-(p + h) // p), -(-(p + w) // p))
            big = np.tile(mip, reps)
            big.setflags(write=False)
            self._tiled[key] = big
        return big


def make_textures(rng: np.random.Generator) -> dict[str, Texture]:
    """Cytoplasm (soft mottling a few microns across), fine chromatin, and coarse clumped chromatin."""
    cyto = 0.6 * smooth_noise(rng, 6.0) + 0.4 * smooth_noise(rng, 18.0)
    return {
        "cyto": Texture(cyto / cyto.std()),
        "fine": Texture(smooth_noise(rng, 1.2)),
        "coarse": Texture(smooth_noise(rng, 3.0)),
    }
