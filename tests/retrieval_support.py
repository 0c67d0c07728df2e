"""Data for the retrieval tests: clustered embeddings and slide-like metadata rows."""

from __future__ import annotations

import numpy as np


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0, offset: float = 3.0) -> np.ndarray:
    """Embeddings in clusters on a low-dimensional subspace, shifted away from the origin (centring must matter)."""
    rng = np.random.default_rng(seed)
    latent = max(4, dim // 4)
    basis = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    which = rng.integers(0, clusters, n)
    x = centres[which] + rng.standard_normal((n, latent)).astype(np.float32) @ basis
    x += 0.1 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x + offset).astype(np.float32)


def tile_rows(n: int, slides: int = 3, start: int = 0) -> list[dict]:
    return [{"source": "tile", "slide": f"/data/slide{i % slides}.tiff", "x": 10 * i, "y": 20 * i, "w": 448,
             "h": 448} for i in range(start, start + n)]
